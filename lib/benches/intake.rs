//! Both intake paths end to end against the embedded store: HTTP request in, body parsed,
//! token verified, alert applied (one SQLite transaction, durable before the answer), job
//! relayed to the embedded FIFO queue, answer out. Run with `cargo bench -p klaxon --bench intake`.

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use klaxon::app::AppState;
use klaxon::config::Config;
use klaxon::embedded::Db;
use klaxon::ingest::mattermost::{self, Encoding};
use klaxon::ingest::particle;
use std::sync::atomic::{AtomicU64, Ordering};
use tower::ServiceExt;

const CONFIG: &str = r#"
version = 1
[[sources]]
id = "chat"
kind = "mattermost"
token = "7kmxqf1b9jdzfcbj1d3u7uwqyo"
[[sources]]
id = "freezer"
kind = "particle"
token = "particle-key-0123456789"
summary_template = "{{event}} from {{coreid}}: {{data.temp}} °C"
"#;

const MM_FORM: &[u8] = include_bytes!("../../tests/fixtures/mattermost/outgoing-webhook.form");
const PARTICLE_JSON: &[u8] = include_bytes!("../../tests/fixtures/particle/product.json");

fn app(dir: &std::path::Path) -> AppState {
    let config = Config::from_toml(CONFIG, "bench", &|_| None).expect("bench config");
    AppState::embedded(config, Db::open_in(dir).expect("db")).expect("state")
}

async fn call(state: &AppState, uri: &str, content_type: &str, auth: Option<&str>, body: String) {
    let mut req = Request::post(uri).header("content-type", content_type);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let res = klaxon::http::all(state.clone()).oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = app(dir.path());
    let n = AtomicU64::new(0);
    let mm_form = String::from_utf8(MM_FORM.to_vec()).unwrap();
    let particle_json = String::from_utf8(PARTICLE_JSON.to_vec()).unwrap();

    let mut parse = c.benchmark_group("parse");
    parse.bench_function("mattermost_form", |b| {
        b.iter(|| mattermost::parse(Encoding::Form, std::hint::black_box(MM_FORM)).unwrap())
    });
    parse.bench_function("particle_json", |b| {
        b.iter(|| particle::parse(Encoding::Json, std::hint::black_box(PARTICLE_JSON)).unwrap())
    });
    parse.finish();

    let mut intake = c.benchmark_group("intake_embedded");
    intake.sample_size(30);
    intake.bench_function("mattermost_trigger_new_alert", |b| {
        b.to_async(&rt).iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            // A new post id and a new title each time: a new alert every call.
            let body = mm_form
                .replace("ymb5ng8qo3fxtjnz6kby8ttbme", &format!("post{i:022}"))
                .replace("checkout", &format!("svc{i}"));
            let state = state.clone();
            async move { call(&state, "/hooks/mattermost/chat", "application/x-www-form-urlencoded", None, body).await }
        })
    });
    let mut particle = |name: &str, vary: &dyn Fn(&str, u64) -> String| {
        intake.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let body = vary(&particle_json, n.fetch_add(1, Ordering::Relaxed));
                let state = state.clone();
                async move {
                    call(
                        &state,
                        "/hooks/particle/freezer",
                        "application/json",
                        Some("Bearer particle-key-0123456789"),
                        body,
                    )
                    .await
                }
            })
        });
    };
    // A new device each time: a new alert every call.
    particle("particle_alert_new_alert", &|json, i| json.replace("e00fce68", &format!("dev{i:08}")));
    // Same device and event, a new publish time: one more occurrence of one alert.
    particle("particle_alert_grouped_repeat", &|json, i| json.replace("12:00:00.000Z", &format!("12:00:00.{i:09}Z")));
    intake.finish();
}

criterion_group!(intake, benches);
criterion_main!(intake);
