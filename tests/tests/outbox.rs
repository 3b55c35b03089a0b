//! The outbox sweep on both backends: unreadable jobs do not block it, and one busy subject
//! cannot starve the others.

use jiff::{SignedDuration, Timestamp};
use klaxon::notify::outbox::{self, Outbox};
use klaxon::notify::{Job, NotifyJob, Subject};
use klaxon::store::{Condition, Item};
use klaxon_tests::TestApp;
use std::time::Duration;

const CONFIG: &str = "version = 1\n";

fn job(alert: &str, revision: u64, at: Timestamp) -> Job {
    Job::Notify(NotifyJob {
        job_id: format!("{alert}#{revision:010}"),
        event: "alert.repeated".into(),
        subject: Subject::Alert { id: alert.into() },
        at,
    })
}

async fn pending_for(app: &TestApp, alert: &str) -> usize {
    app.state.store.query_prefix("outbox", &format!("{alert}#"), None).await.unwrap().len()
}

async fn add(app: &TestApp, jobs: impl IntoIterator<Item = Job>) {
    let writes: Vec<_> = jobs.into_iter().map(|j| outbox::item_write(&j)).collect();
    for chunk in writes.chunks(50) {
        app.state.store.transact(chunk.to_vec()).await.unwrap();
    }
}

fn outbox_of(app: &TestApp) -> Outbox {
    app.state.outbox()
}

macro_rules! outbox_tests {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(app) = $factory(super::CONFIG).await else { return };
                super::$case(app).await;
            }
        )*
    };
}

macro_rules! all_cases {
    ($factory:path) => {
        outbox_tests!($factory;
            a_job_this_version_cannot_read_is_skipped_and_the_others_go,
            a_subject_with_a_long_backlog_cannot_starve_the_others);
    };
}

mod sqlite {
    all_cases!(klaxon_tests::embedded_app);
}

mod aws {
    all_cases!(klaxon_tests::aws_app);
}

/// The first deploy that adds a job type: an older version still sweeping meets a job it
/// cannot parse. It leaves it (and the jobs of that subject behind it) for the new version.
async fn a_job_this_version_cannot_read_is_skipped_and_the_others_go(app: TestApp) {
    let old = Timestamp::now() - SignedDuration::from_hours(1);
    let future = r#"{"type":"escalate","job_id":"ALR-1#0000000001","step":2}"#;
    app.state.store.put(Item::new("outbox", "ALR-1#0000000001", future), Condition::Absent).await.unwrap();
    add(&app, [job("ALR-1", 2, old), job("ALR-2", 1, old), job("ALR-3", 1, old)]).await;
    let sent = outbox_of(&app).sweep(Duration::ZERO).await.expect("an unreadable job is no error");
    assert_eq!(sent, 2, "ALR-2 and ALR-3 went");
    assert_eq!(pending_for(&app, "ALR-1").await, 2, "the unreadable job and the one behind it wait, in order");
    assert_eq!((pending_for(&app, "ALR-2").await, pending_for(&app, "ALR-3").await), (0, 0));
    // The request path's hand-over of a later ALR-1 job treats it the same way: nothing of
    // ALR-1 may overtake the job that waits.
    assert_eq!(outbox_of(&app).hand_over(&job("ALR-1", 3, old)).await, 0);
    assert_eq!(pending_for(&app, "ALR-1").await, 2);
}

async fn a_subject_with_a_long_backlog_cannot_starve_the_others(app: TestApp) {
    let old = Timestamp::now() - SignedDuration::from_hours(1);
    let young = Timestamp::now() + SignedDuration::from_hours(1);
    // ALR-1: 250 jobs still being relayed by their requests (too young to sweep); ALR-2: 60 old
    // ones; ALR-3: one old job that sorts after both backlogs.
    add(&app, (1..=250).map(|r| job("ALR-1", r, young))).await;
    add(&app, (1..=60).map(|r| job("ALR-2", r, old))).await;
    add(&app, [job("ALR-3", 1, old)]).await;
    let sent = outbox_of(&app).sweep(Duration::from_secs(10)).await.unwrap();
    assert_eq!(pending_for(&app, "ALR-3").await, 0, "the job behind two backlogs went in the first sweep");
    assert_eq!(pending_for(&app, "ALR-1").await, 250, "young jobs are left to their requests");
    let alr2_sent = 60 - pending_for(&app, "ALR-2").await;
    assert!((1..60).contains(&alr2_sent), "ALR-2 got a bounded share: {alr2_sent}");
    assert_eq!(sent, alr2_sent + 1);
    // Later sweeps finish ALR-2, oldest first.
    while outbox_of(&app).sweep(Duration::from_secs(10)).await.unwrap() > 0 {}
    assert_eq!(pending_for(&app, "ALR-2").await, 0);
}
