//! The `particle-webhook` Lambda function: wiring only. The routes live in `klaxon::http::particle_webhook`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    klaxon::telemetry::init();
    let state = klaxon::app::AppState::for_lambda().await?;
    lambda_http::run(klaxon::http::particle_webhook(state)).await
}
