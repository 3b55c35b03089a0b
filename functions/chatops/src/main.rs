//! The `chatops` Lambda function: wiring only. The routes live in `klaxon::http::chatops`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    klaxon::telemetry::init();
    let state = klaxon::app::AppState::for_lambda().await?;
    lambda_http::run(klaxon::http::chatops(state)).await
}
