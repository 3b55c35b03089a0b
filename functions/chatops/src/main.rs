//! The `chatops` Lambda function: wiring only. The routes live in `klaxon::http::chatops`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    klaxon::telemetry::init();
    klaxon::lambda::run_http(klaxon::http::chatops).await
}
