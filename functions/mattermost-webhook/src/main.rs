//! The `mattermost-webhook` Lambda function: wiring only. The routes live in `klaxon::http::mattermost_webhook`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    klaxon::telemetry::init();
    let state = klaxon::app::AppState::for_lambda().await?;
    lambda_http::run(klaxon::http::mattermost_webhook(state)).await
}
