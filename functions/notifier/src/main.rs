//! The `notifier` Lambda function: wiring only. It is invoked with SQS batches from the notify
//! (FIFO) and timer queues, reporting partial batch failures, and by a schedule that sweeps the
//! outbox, reads incident channels and fires escalation timers; the logic is `klaxon::notify::lambda::handle_event`.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    klaxon::telemetry::init();
    let app = klaxon::lambda::LambdaApp::init().await?;
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let state = app.state().await;
        let queues = [state.notify_queue.clone(), state.timer_queue.clone()];
        let (reader, escalator) = (state.channel_reader(), state.escalator());
        klaxon::notify::lambda::handle_event(
            &state.notifier(),
            &state.outbox(),
            &queues,
            reader.as_ref(),
            escalator.as_ref(),
            event.payload,
        )
        .await
        .map_err(Error::from)
    }))
    .await
}
