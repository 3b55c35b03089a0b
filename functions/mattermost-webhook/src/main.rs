//! The `mattermost-webhook` Lambda function: wiring only. The routes live in `klaxon::http::mattermost_webhook`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    klaxon::telemetry::init();
    klaxon::lambda::run_http(klaxon::http::mattermost_webhook).await
}
