//! The queue contract: every adapter must pass every case here, unchanged.
//!
//! Timing cases use whole seconds, because SQS counts visibility and delay in seconds.
//!
//! # Where moto differs from SQS
//!
//! * **A FIFO group redelivered after a visibility timeout** comes back as its last message
//!   only in moto; SQS redelivers the group's messages in order. The contract asserts SQS's
//!   behaviour where both agree and never relies on moto's.
//! * **Deduplication ids** are forgotten by moto once the message is deleted; SQS remembers
//!   them for 5 minutes. That half of the rule is asserted for the SQLite adapter only; Klaxon
//!   never relies on it (delivery records keyed by job id make a redelivery harmless).
//! * moto never throttles and never denies access.

use crate::TestQueue;
use klaxon::queue::{OutgoingMessage, QueueError, QueueKind, ReceiveOptions, ReceivedMessage};
use std::time::Duration;

const VT: Duration = Duration::from_secs(1);
const LONG_VT: Duration = Duration::from_secs(30);

/// Generates one `#[tokio::test]` per contract case for an adapter factory
/// `async fn(QueueKind, max_receives) -> Option<TestQueue>`.
#[macro_export]
macro_rules! queue_contract_tests {
    ($factory:path) => {
        $crate::queue_contract_tests!(@cases $factory;
            fifo_delivers_a_group_in_send_order, fifo_drops_a_duplicate_dedup_id,
            fifo_holds_back_a_group_while_one_of_its_messages_is_in_flight,
            fifo_refuses_delays_and_missing_ids_and_enqueues_nothing,
            standard_queue_delays_a_message_until_its_time, standard_queue_refuses_delays_over_900_s,
            unacknowledged_message_comes_back_after_the_visibility_timeout,
            deleted_message_never_comes_back_and_delete_is_retry_safe,
            message_moves_to_the_dead_letter_queue_after_max_receives, invalid_receives_are_refused,
            a_consumer_can_push_a_message_back_for_later, a_batch_of_deletes_removes_each_message_once);
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::queue_contract::$case(|kind, max| $factory(kind, max)).await;
            }
        )*
    };
}

async fn receive_all(q: &TestQueue, vt: Duration) -> Vec<ReceivedMessage> {
    q.queue.receive(ReceiveOptions::new(10, vt)).await.expect("receive")
}

fn bodies(ms: &[ReceivedMessage]) -> Vec<&str> {
    ms.iter().map(|m| m.body.as_str()).collect()
}

/// Drains a FIFO queue by receiving and deleting, the way a consumer does.
async fn drain(q: &TestQueue) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..20 {
        let got = q.queue.receive(ReceiveOptions::new(10, LONG_VT)).await.expect("receive");
        if got.is_empty() {
            break;
        }
        for m in got {
            q.queue.delete(&m.receipt).await.expect("delete");
            out.push(m.body);
        }
    }
    out
}

pub async fn fifo_delivers_a_group_in_send_order<F, Fut>(make: F)
where
    F: Fn(QueueKind, u32) -> Fut,
    Fut: std::future::Future<Output = Option<TestQueue>>,
{
    let Some(q) = make(QueueKind::Fifo, 5).await else {
        return;
    };
    for i in 0..6 {
        q.queue.send(OutgoingMessage::fifo(format!("m{i}"), "ALR-1", format!("job-{i}"))).await.unwrap();
    }
    assert_eq!(drain(&q).await, ["m0", "m1", "m2", "m3", "m4", "m5"]);
}

pub async fn fifo_drops_a_duplicate_dedup_id<F, Fut>(make: F)
where
    F: Fn(QueueKind, u32) -> Fut,
    Fut: std::future::Future<Output = Option<TestQueue>>,
{
    let Some(q) = make(QueueKind::Fifo, 5).await else {
        return;
    };
    q.queue.send(OutgoingMessage::fifo("first", "g", "job-1")).await.unwrap();
    q.queue.send(OutgoingMessage::fifo("retry of first", "g", "job-1")).await.unwrap();
    q.queue.send(OutgoingMessage::fifo("second", "g", "job-2")).await.unwrap();
    assert_eq!(drain(&q).await, ["first", "second"]);
    // AWS keeps tracking a deduplication id after the message is deleted; moto 5.2.5 forgets it,
    // so that half of the rule is asserted for the embedded adapter only (lib/src/queue/sqlite.rs).
}

pub async fn fifo_holds_back_a_group_while_one_of_its_messages_is_in_flight<F, Fut>(make: F)
where
    F: Fn(QueueKind, u32) -> Fut,
    Fut: std::future::Future<Output = Option<TestQueue>>,
{
    let Some(q) = make(QueueKind::Fifo, 5).await else {
        return;
    };
    q.queue.send(OutgoingMessage::fifo("a1", "A", "a1")).await.unwrap();
    q.queue.send(OutgoingMessage::fifo("a2", "A", "a2")).await.unwrap();
    q.queue.send(OutgoingMessage::fifo("b1", "B", "b1")).await.unwrap();
    let first = q.queue.receive(ReceiveOptions::new(1, LONG_VT)).await.unwrap();
    assert_eq!(bodies(&first), ["a1"]);
    assert_eq!(first[0].group_id.as_deref(), Some("A"));
    let next = receive_all(&q, LONG_VT).await;
    assert_eq!(bodies(&next), ["b1"], "group A waits while a1 is in flight");
    q.queue.delete(&first[0].receipt).await.unwrap();
    let last = receive_all(&q, LONG_VT).await;
    assert_eq!(bodies(&last), ["a2"]);
}

pub async fn fifo_refuses_delays_and_missing_ids_and_enqueues_nothing<F, Fut>(make: F)
where
    F: Fn(QueueKind, u32) -> Fut,
    Fut: std::future::Future<Output = Option<TestQueue>>,
{
    let Some(q) = make(QueueKind::Fifo, 5).await else {
        return;
    };
    let delayed = OutgoingMessage::fifo("x", "g", "d1").delayed(Duration::from_secs(5));
    let err = q.queue.send(delayed).await.unwrap_err();
    assert!(err.to_string().contains("standard queue"), "{err}");
    let mut no_group = OutgoingMessage::fifo("x", "g", "d2");
    no_group.group_id = None;
    assert!(matches!(q.queue.send(no_group).await, Err(QueueError::InvalidMessage(_))));
    let mut no_dedup = OutgoingMessage::fifo("x", "g", "d3");
    no_dedup.dedup_id = None;
    assert!(matches!(q.queue.send(no_dedup).await, Err(QueueError::InvalidMessage(_))));
    assert!(q.queue.send(OutgoingMessage::fifo("", "g", "d4")).await.is_err(), "empty body");
    assert!(receive_all(&q, VT).await.is_empty());
}

pub async fn standard_queue_delays_a_message_until_its_time<F, Fut>(make: F)
where
    F: Fn(QueueKind, u32) -> Fut,
    Fut: std::future::Future<Output = Option<TestQueue>>,
{
    let Some(q) = make(QueueKind::Standard, 5).await else {
        return;
    };
    q.queue.send(OutgoingMessage::standard("later").delayed(Duration::from_secs(2))).await.unwrap();
    q.queue.send(OutgoingMessage::standard("now")).await.unwrap();
    assert_eq!(bodies(&receive_all(&q, LONG_VT).await), ["now"]);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let got = q.queue.receive(ReceiveOptions::new(10, LONG_VT).waiting(Duration::from_secs(2))).await.unwrap();
    assert_eq!(bodies(&got), ["later"]);
    assert!(q.queue.send(OutgoingMessage::fifo("x", "g", "d")).await.is_err(), "no FIFO ids on a standard queue");
}

pub async fn standard_queue_refuses_delays_over_900_s<F, Fut>(make: F)
where
    F: Fn(QueueKind, u32) -> Fut,
    Fut: std::future::Future<Output = Option<TestQueue>>,
{
    let Some(q) = make(QueueKind::Standard, 5).await else {
        return;
    };
    let err = q.queue.send(OutgoingMessage::standard("x").delayed(Duration::from_secs(901))).await.unwrap_err();
    assert!(err.to_string().contains("900 s"), "{err}");
    q.queue.send(OutgoingMessage::standard("max").delayed(Duration::from_secs(900))).await.unwrap();
    assert!(receive_all(&q, VT).await.is_empty());
}

pub async fn unacknowledged_message_comes_back_after_the_visibility_timeout<F, Fut>(make: F)
where
    F: Fn(QueueKind, u32) -> Fut,
    Fut: std::future::Future<Output = Option<TestQueue>>,
{
    for kind in [QueueKind::Fifo, QueueKind::Standard] {
        let Some(q) = make(kind, 5).await else { return };
        let msg = match kind {
            QueueKind::Fifo => OutgoingMessage::fifo("job", "g", "j1"),
            QueueKind::Standard => OutgoingMessage::standard("job"),
        };
        q.queue.send(msg).await.unwrap();
        let first = receive_all(&q, VT).await;
        assert_eq!((bodies(&first), first[0].receive_count), (vec!["job"], 1));
        assert!(receive_all(&q, VT).await.is_empty(), "{kind:?}: invisible while in flight");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let again = receive_all(&q, VT).await;
        assert_eq!(bodies(&again), ["job"], "{kind:?}: redelivered");
        assert_eq!(again[0].message_id, first[0].message_id);
        assert_eq!(again[0].receive_count, 2);
    }
}

pub async fn deleted_message_never_comes_back_and_delete_is_retry_safe<F, Fut>(make: F)
where
    F: Fn(QueueKind, u32) -> Fut,
    Fut: std::future::Future<Output = Option<TestQueue>>,
{
    let Some(q) = make(QueueKind::Standard, 5).await else {
        return;
    };
    q.queue.send(OutgoingMessage::standard("once")).await.unwrap();
    let got = receive_all(&q, VT).await;
    q.queue.delete(&got[0].receipt).await.unwrap();
    q.queue.delete(&got[0].receipt).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(receive_all(&q, VT).await.is_empty());
}

pub async fn a_batch_of_deletes_removes_each_message_once<F, Fut>(make: F)
where
    F: Fn(QueueKind, u32) -> Fut,
    Fut: std::future::Future<Output = Option<TestQueue>>,
{
    let Some(q) = make(QueueKind::Fifo, 5).await else {
        return;
    };
    for i in 0..12 {
        q.queue.send(OutgoingMessage::fifo(format!("m{i}"), format!("g{i}"), format!("d{i}"))).await.unwrap();
    }
    let mut receipts = Vec::new();
    for _ in 0..3 {
        receipts.extend(receive_all(&q, VT).await.into_iter().map(|m| m.receipt));
    }
    assert_eq!(receipts.len(), 12);
    let (first, rest) = receipts.split_at(11);
    q.queue.delete_batch(first).await.unwrap();
    q.queue.delete_batch(first).await.expect("deleting again is not an error");
    q.queue.delete_batch(&[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let back = receive_all(&q, VT).await;
    assert_eq!(bodies(&back), ["m11"], "only the message not deleted comes back");
    assert_ne!(back[0].receipt, rest[0]);
}

pub async fn message_moves_to_the_dead_letter_queue_after_max_receives<F, Fut>(make: F)
where
    F: Fn(QueueKind, u32) -> Fut,
    Fut: std::future::Future<Output = Option<TestQueue>>,
{
    let Some(q) = make(QueueKind::Fifo, 2).await else {
        return;
    };
    q.queue.send(OutgoingMessage::fifo("poison", "g", "p1")).await.unwrap();
    q.queue.send(OutgoingMessage::fifo("healthy", "g", "h1")).await.unwrap();
    for attempt in 1..=2 {
        let got = q.queue.receive(ReceiveOptions::new(1, VT)).await.unwrap();
        assert_eq!(bodies(&got), ["poison"], "attempt {attempt}");
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    // The third receive moves the poison message away and the group moves on.
    let got = q.queue.receive(ReceiveOptions::new(1, LONG_VT)).await.unwrap();
    assert_eq!(bodies(&got), ["healthy"]);
    let dead = q.dead_letters.receive(ReceiveOptions::new(10, LONG_VT)).await.unwrap();
    assert_eq!(bodies(&dead), ["poison"]);
    // The queue names its dead-letter queue (how `klaxon deliveries` finds it).
    let found = q.queue.dead_letter_queue().await.unwrap().expect("a redrive policy");
    assert_eq!(found.name(), q.dead_letters.name());
    assert!(q.dead_letters.dead_letter_queue().await.unwrap().is_none(), "a dead-letter queue has none");
}

pub async fn invalid_receives_are_refused<F, Fut>(make: F)
where
    F: Fn(QueueKind, u32) -> Fut,
    Fut: std::future::Future<Output = Option<TestQueue>>,
{
    let Some(q) = make(QueueKind::Standard, 5).await else {
        return;
    };
    for max in [0, 11] {
        let err = q.queue.receive(ReceiveOptions::new(max, VT)).await.unwrap_err();
        assert!(matches!(err, QueueError::InvalidReceive(_)), "{err:?}");
    }
}

/// How the notifier backs off: a failed message is made visible again later than the queue's
/// visibility timeout would, or at once.
pub async fn a_consumer_can_push_a_message_back_for_later<F, Fut>(make: F)
where
    F: Fn(QueueKind, u32) -> Fut,
    Fut: std::future::Future<Output = Option<TestQueue>>,
{
    for kind in [QueueKind::Fifo, QueueKind::Standard] {
        let Some(q) = make(kind, 5).await else { return };
        let msg = |body: &str| match kind {
            QueueKind::Fifo => OutgoingMessage::fifo(body, body, body),
            QueueKind::Standard => OutgoingMessage::standard(body),
        };
        q.queue.send(msg("later")).await.unwrap();
        q.queue.send(msg("now")).await.unwrap();
        let got = receive_all(&q, LONG_VT).await;
        assert_eq!(got.len(), 2, "{kind:?}");
        let (later, now) = if got[0].body == "later" { (&got[0], &got[1]) } else { (&got[1], &got[0]) };
        q.queue.change_visibility(&later.receipt, Duration::from_secs(2)).await.unwrap();
        q.queue.change_visibility(&now.receipt, Duration::ZERO).await.unwrap();
        let again = receive_all(&q, LONG_VT).await;
        assert_eq!(bodies(&again), ["now"], "{kind:?}: visible at once, the other not yet");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let last = receive_all(&q, LONG_VT).await;
        assert_eq!(bodies(&last), ["later"], "{kind:?}: back after its new timeout");
        q.queue.change_visibility("no-such-receipt", Duration::ZERO).await.ok();
    }
}
