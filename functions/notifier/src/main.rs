//! The `notifier` Lambda function: wiring only. It is invoked with SQS batches from the notify
//! (FIFO) and timer queues, reporting partial batch failures, and by a schedule that sweeps the
//! outbox and runs the periodic work (incident channels, escalation timers, maintenance ends); the logic is `klaxon::notify::lambda::handle_event`.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    klaxon::telemetry::init();
    let app = klaxon::lambda::LambdaApp::init().await?;
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let state = app.state().await;
        let queues = [state.notify_queue.clone(), state.timer_queue.clone()];
        klaxon::notify::lambda::handle_event(&state.notifier(), &state.outbox(), &queues, &state.tick(), event.payload)
            .await
            .map_err(Error::from)
    }))
    .await
}
