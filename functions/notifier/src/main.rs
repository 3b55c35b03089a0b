//! The `notifier` Lambda function: wiring only. It is invoked with SQS batches from the notify
//! (FIFO) and timer queues and reports partial batch failures; the logic is
//! `klaxon::notify::lambda::handle_sqs_event`.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    klaxon::telemetry::init();
    let state = klaxon::app::AppState::for_lambda().await?;
    let notifier = state.notifier();
    let notifier = &notifier;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        klaxon::notify::lambda::handle_sqs_event(notifier, event.payload).await.map_err(Error::from)
    }))
    .await
}
