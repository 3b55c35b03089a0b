//! End-to-end latency of an alert card on the embedded store: from the Particle webhook request
//! to the card at a (fake) Mattermost, through `klaxon serve`'s router, the embedded queue and
//! the in-process notifier. Prints p50/p99 for alerts sent one at a time, and cards per second
//! for a burst from 8 senders.
//!
//!   cargo run --release -p klaxon-tests --bin e2e-latency [ALERTS]

use klaxon::notify::worker::Worker;
use klaxon_tests::fake_mattermost::{BOT_TOKEN, FakeMattermost};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OPS: &str = "0psch4nnel0psch4nnel0psch4";
const KEY: &str = "particle-key-0123456789";

async fn wait_for_cards(fake: &FakeMattermost, n: usize) {
    while fake.root_count() < n {
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let alerts: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let fake = FakeMattermost::start().await;
    fake.add_bot_to(OPS);
    let config = format!(
        "version = 1\n[server]\npublic_url = \"https://klaxon.example.com\"\nsigning_secret = \"0123456789abcdef0123456789abcdef\"\n\
         [mattermost]\nurl = \"{}\"\nbot_token = \"{BOT_TOKEN}\"\n[channels.ops]\nchannel_id = \"{OPS}\"\n[routing]\ndefault = \"ops\"\n\
         [[sources]]\nid = \"freezer\"\nkind = \"particle\"\ntoken = \"{KEY}\"\n",
        fake.url
    );
    let config = klaxon::config::Config::from_toml(&config, "bench", &|_| None).expect("valid bench configuration");
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = klaxon::embedded::Db::open_in(dir.path()).expect("database");
    let state = klaxon::app::AppState::embedded(config, db).expect("state");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks/particle/freezer", listener.local_addr().expect("address"));
    let app = klaxon::http::all(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = Worker {
        name: "notify",
        queue: state.notify_queue.clone(),
        handler: Arc::new(state.notifier()),
        visibility: Duration::from_secs(30),
    };
    tokio::spawn(worker.run(stop_rx));
    let http = reqwest::Client::new();
    let send = move |i: usize| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let res = http
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", format!("Bearer {KEY}"))
                .body(format!("event=ALERT&coreid=dev{i}&data=-3.5&published_at=t{i}"))
                .send()
                .await
                .expect("request");
            assert!(res.status().is_success(), "status {}", res.status());
        }
    };

    // One at a time: request sent -> card at Mattermost.
    let mut latencies = Vec::with_capacity(alerts);
    for i in 0..alerts {
        let started = Instant::now();
        send(i).await;
        wait_for_cards(&fake, i + 1).await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "sequential: {alerts} alerts, webhook request to card at Mattermost: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );

    // A burst from 8 senders: cards per second until every card is there.
    let burst = alerts * 2;
    let started = Instant::now();
    let senders: Vec<_> = (0..8)
        .map(|s| {
            let send = send.clone();
            tokio::spawn(async move {
                for i in (s..burst).step_by(8) {
                    send(alerts + i).await;
                }
            })
        })
        .collect();
    for s in senders {
        s.await.expect("sender");
    }
    let accepted = started.elapsed();
    wait_for_cards(&fake, alerts + burst).await;
    let done = started.elapsed();
    println!(
        "burst: {burst} alerts from 8 senders accepted in {:.2} s; every card posted after {:.2} s: {:.0} cards/s",
        accepted.as_secs_f64(),
        done.as_secs_f64(),
        burst as f64 / done.as_secs_f64()
    );
    println!("load average: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
}
