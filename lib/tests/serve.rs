//! `klaxon serve` and `klaxon config check` as a user runs them: the real binary, a temporary
//! working directory, signals to stop it.

use jiff::Timestamp;
use klaxon::app::AppState;
use klaxon::config::Config;
use klaxon::domain::{Actor, Alert, NewAlert, Urgency};
use klaxon::embedded::Db;
use klaxon::notify::{Job, NotifyJob, Subject};
use klaxon::repo::deliveries::Delivery;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_klaxon");

struct Server {
    child: Child,
    url: String,
    stdout_head: String,
}

/// Starts `klaxon serve` on a free port in `dir` and waits for its banner.
fn start(dir: &Path, extra: &[&str]) -> Server {
    start_with_env(dir, extra, &[])
}

fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(BIN)
        .envs(env.iter().copied())
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(extra)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .env("KLAXON_TEST_MM_TOKEN", "mm-token-from-env")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start klaxon serve");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut head = String::new();
    let mut url = None;
    for _ in 0..40 {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read banner") == 0 {
            break;
        }
        if let Some(rest) = line.strip_prefix("Klaxon ").and_then(|l| l.split("listening on ").nth(1)) {
            url = Some(rest.trim().to_string());
        }
        head.push_str(&line);
        if line.starts_with("Stop with Ctrl-C") {
            break;
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    let mut rest = String::new();
    std::thread::spawn(move || reader.read_to_string(&mut rest));
    let Some(url) = url else {
        let _ = child.kill();
        let mut stderr = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
        panic!("klaxon serve printed no listening line.\nstdout:\n{head}\nstderr:\n{stderr}");
    };
    Server { child, url, stdout_head: head }
}

/// Sends SIGINT (Ctrl-C) and returns (exit success, stderr).
fn interrupt(mut s: Server) -> (bool, String) {
    let status = Command::new("kill").args(["-INT", &s.child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = s.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "klaxon serve did not stop within 10 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    s.child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    (exit.success(), stderr)
}

/// Polls for up to 10 s until the running server's notifier has recorded `job_id`.
async fn wait_for_delivery(
    deliveries: &klaxon::repo::deliveries::DeliveryRepo,
    job_id: &str,
) -> Option<klaxon::repo::deliveries::DeliveryRecord> {
    for _ in 0..100 {
        if let Some(record) = deliveries.get(job_id).await.unwrap() {
            return Some(record);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn alert(id: &str) -> Alert {
    let new = NewAlert {
        id: id.into(),
        source: "freezer".into(),
        dedup_key: "dev1:temp".into(),
        summary: "Freezer warm".into(),
        details: String::new(),
        urgency: Urgency::High,
    };
    Alert::trigger(new, Actor::source("freezer"), Timestamp::now())
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_starts_empty_explains_itself_processes_queued_work_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    // Work queued while Klaxon is not running (as after a crash or a restart).
    {
        let state = AppState::embedded(Config::empty(), Db::open_in(&dir.path().join("klaxon-data")).unwrap()).unwrap();
        state.alerts().create(&alert("ALR-1"), None, vec![]).await.unwrap();
        let job = Job::Notify(NotifyJob {
            job_id: "ALR-1:alert.triggered".into(),
            event: "alert.triggered".into(),
            subject: Subject::Alert { id: "ALR-1".into() },
            at: Timestamp::now(),
        });
        state.notify_queue.send(job.to_message()).await.unwrap();
    }

    let server = start(dir.path(), &[]);
    assert!(server.stdout_head.contains("running on an empty configuration"), "{}", server.stdout_head);
    assert!(server.stdout_head.contains("cp klaxon.example.toml klaxon.toml"), "{}", server.stdout_head);
    assert!(server.stdout_head.contains("mattermost: NOT configured"), "{}", server.stdout_head);

    let health: serde_json::Value =
        reqwest::get(format!("{}/healthz", server.url)).await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");

    let db = Db::open_in(&dir.path().join("klaxon-data")).unwrap();
    let deliveries = AppState::embedded(Config::empty(), db).unwrap().deliveries();
    let record = wait_for_delivery(&deliveries, "ALR-1:alert.triggered")
        .await
        .expect("the queued job was processed after start-up");
    assert!(matches!(record.delivery, Delivery::NotDelivered { .. }), "{record:?}");

    let (ok, stderr) = interrupt(server);
    assert!(ok, "clean exit on Ctrl-C; stderr:\n{stderr}");
    assert!(stderr.contains("notification NOT delivered"), "{stderr}");
    assert!(stderr.contains("worker stopped"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_from_the_config_or_a_request_reaches_the_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("klaxon.toml"),
        r#"
version = 1
[server]
public_url = "https://klaxon.example.com"
[[sources]]
id = "freezer"
kind = "particle"
token = "PARTICLE-SECRET-KEY-1234"
[[sources]]
id = "chat"
kind = "mattermost"
token = "${KLAXON_TEST_MM_TOKEN}"
"#,
    )
    .unwrap();
    let server = start(dir.path(), &[]);
    assert!(server.stdout_head.contains("https://klaxon.example.com/hooks/particle/freezer"), "{}", server.stdout_head);
    assert!(server.stdout_head.contains("https://klaxon.example.com/hooks/mattermost/chat"), "{}", server.stdout_head);
    let client = reqwest::Client::new();
    let accepted = client
        .post(format!("{}/hooks/particle/freezer?key=PARTICLE-SECRET-KEY-1234", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("event=ALERT&data=x&coreid=d1")
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let refused = client
        .post(format!("{}/hooks/particle/freezer", server.url))
        .header("authorization", "Bearer PARTICLE-SECRET-KEY-9999")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("event=ALERT&data=x&coreid=d1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let head = server.stdout_head.clone();
    let (ok, stderr) = interrupt(server);
    assert!(ok);
    for secret in ["PARTICLE-SECRET-KEY", "mm-token-from-env"] {
        assert!(!head.contains(secret) && !stderr.contains(secret), "{secret} leaked:\n{head}\n{stderr}");
    }
    assert!(stderr.contains("/hooks/particle/{source_id}"), "requests are logged by route: {stderr}");
    assert!(stderr.contains("particle event") && stderr.contains("alert_id=ALR-1 "), "{stderr}");
    assert!(stderr.contains("request refused") && stderr.contains("wrong_token"), "refusals are logged: {stderr}");
}

/// At the default level a storm writes one line per alert (its outcome, inside the request's
/// span), not one more per request and one per job: a problem every job meets (here, no
/// Mattermost) is logged once per reason a minute, and every job's outcome is still recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_logs_one_line_per_alert_and_a_problem_every_job_meets_once() {
    const ALERTS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("klaxon.toml"),
        "version = 1\n[[sources]]\nid = \"freezer\"\nkind = \"particle\"\ntoken = \"particle-key-0123456789\"\n",
    )
    .unwrap();
    let server = start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let sends = (0..ALERTS).map(|i| {
        client
            .post(format!("{}/hooks/particle/freezer", server.url))
            .header("authorization", "Bearer particle-key-0123456789")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("event=ALERT&data=-3&coreid=device-{i}&published_at=2026-12-02T10:00:0{}Z", i % 10))
            .send()
    });
    for answer in futures_util::future::join_all(sends).await {
        assert_eq!(answer.unwrap().status(), 200);
    }
    let db = Db::open_in(&dir.path().join("klaxon-data")).unwrap();
    let deliveries = AppState::embedded(Config::empty(), db).unwrap().deliveries();
    for n in 1..=ALERTS {
        let record = wait_for_delivery(&deliveries, &format!("ALR-{n}#0000000001"))
            .await
            .unwrap_or_else(|| panic!("ALR-{n}'s job was recorded"));
        assert!(matches!(record.delivery, Delivery::NotDelivered { .. }), "{record:?}");
    }
    let (ok, stderr) = interrupt(server);
    assert!(ok, "{stderr}");
    let count = |what: &str| stderr.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("particle event"), ALERTS, "one line per alert:\n{stderr}");
    assert_eq!(count("notification NOT delivered"), 1, "one line for the reason all jobs share:\n{stderr}");
    assert_eq!(count("finished processing request"), 0, "no second line per request at info:\n{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("particle event") && l.contains("/hooks/particle/{source_id}")),
        "the outcome's line names the route:\n{stderr}"
    );
}

#[test]
fn serve_refuses_a_missing_config_file_and_a_busy_port_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["serve", "--config", "nope.toml"]).current_dir(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read nope.toml"), "{err}");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = Command::new(BIN).args(["serve", "--addr", &addr]).current_dir(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")) && err.contains("--addr"), "{err}");
}

#[test]
fn config_check_prints_ok_with_a_summary_or_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "version = 1\n[[sources]]\nid = \"chat\"\nkind = \"mattermost\"\ntoken = \"abcdefghijkl\"\n")
        .unwrap();
    let out = Command::new(BIN).args(["config", "check"]).arg(&good).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("ok: ") && stdout.contains("sources: 1: chat (mattermost)"), "{stdout}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "version = 1\n[routing]\ndefault = \"x\"\n[[sources]]\nid = \"a b\"\nkind = \"particle\"\n")
        .unwrap();
    let out = Command::new(BIN).args(["config", "check"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for field in ["routing.default", "sources[0].id", "sources[0].token"] {
        assert!(stderr.contains(field), "{field} missing from:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_json_lines_with_structured_fields_under_lambda() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_env(dir.path(), &[], &[("AWS_LAMBDA_FUNCTION_NAME", "klaxon-notifier")]);
    let _ = reqwest::get(format!("{}/healthz", server.url)).await.unwrap();
    let (ok, stderr) = interrupt(server);
    assert!(ok);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("message").is_some(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("\"worker\":\"notify\"")), "structured fields are JSON keys: {stderr}");
}

/// `klaxon serve` with `backend = "aws"`, against moto (started by tests/run.sh).
#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_on_dynamodb_and_sqs_when_configured() {
    let endpoint = match std::env::var("KLAXON_TEST_AWS_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("KLAXON_TEST_AWS_ENDPOINT is not set but CI=true")
        }
        _ => return eprintln!("notice: KLAXON_TEST_AWS_ENDPOINT is not set, skipping the AWS serve test"),
    };
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "serve-test"))
        .load()
        .await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let table = format!("klaxon-serve-{suffix}");
    klaxon::store::dynamodb::DynamoStore::create_table(&dynamo, &table).await.unwrap();
    let (notify, _) =
        klaxon::queue::sqs::SqsQueue::create_with_dead_letter(&sqs, &format!("serve-{suffix}.fifo"), 5).await.unwrap();
    let (timer, _) =
        klaxon::queue::sqs::SqsQueue::create_with_dead_letter(&sqs, &format!("serve-t-{suffix}"), 5).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("klaxon.toml"),
        format!(
            "version = 1\n[storage]\nbackend = \"aws\"\ntable = \"{table}\"\nnotify_queue_url = \"{notify}\"\ntimer_queue_url = \"{timer}\"\n\
             [[sources]]\nid = \"freezer\"\nkind = \"particle\"\ninsecure = true\n"
        ),
    )
    .unwrap();
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let server = start_with_env(dir.path(), &[], &env);
    assert!(server.stdout_head.contains(&format!("storage: DynamoDB table {table}")), "{}", server.stdout_head);
    let res = reqwest::Client::new()
        .post(format!("{}/hooks/particle/freezer", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("event=ALERT&coreid=dev1&published_at=t1")
        .send()
        .await
        .unwrap();
    if res.status() != 200 {
        let (_, stderr) = interrupt(server);
        panic!("{stderr}");
    }

    let state = AppState::aws_with(&sdk, Config::empty(), table, notify, timer);
    assert_eq!(state.alerts().get("ALR-1").await.unwrap().map(|a| a.value.summary), Some("ALERT from dev1".into()));
    let record = wait_for_delivery(&state.deliveries(), "ALR-1#0000000001").await;
    assert!(record.is_some(), "the in-process notifier took the job from SQS");
    let (ok, stderr) = interrupt(server);
    assert!(ok, "{stderr}");
}

/// `klaxon config push` and `show`, the real binary against moto's DynamoDB and SSM.
#[tokio::test(flavor = "multi_thread")]
async fn config_push_and_show_work_from_the_command_line() {
    let endpoint = match std::env::var("KLAXON_TEST_AWS_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("KLAXON_TEST_AWS_ENDPOINT is not set but CI=true")
        }
        _ => return eprintln!("notice: KLAXON_TEST_AWS_ENDPOINT is not set, skipping the config push test"),
    };
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "push-test"))
        .load()
        .await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let table = format!("klaxon-push-{suffix}");
    klaxon::store::dynamodb::DynamoStore::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("klaxon.toml");
    std::fs::write(
        &file,
        "version = 1\n[[sources]]\nid = \"freezer\"\nkind = \"particle\"\ntoken = \"${PUSH_TEST_KEY}\"\n",
    )
    .unwrap();
    let prefix = format!("/push-{suffix}/");
    let run = |args: &[&str], key: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("KLAXON_TABLE", &table).env_remove("PUSH_TEST_KEY");
        for (k, v) in [
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ] {
            cmd.env(k, v);
        }
        if let Some(key) = key {
            cmd.env("PUSH_TEST_KEY", key);
        }
        cmd.output().unwrap()
    };
    let path = file.to_str().unwrap();

    let out = run(&["config", "show"], None);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no configuration has been pushed"));
    let out = run(&["config", "push", path, "--prefix", &prefix], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--put-secrets") && stderr.contains("nothing was changed"),
        "{stderr}"
    );

    let out = run(&["config", "push", path, "--put-secrets", "--prefix", &prefix], Some("pushed-key-0123456789"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("as version 1"), "{stdout}");
    let out = run(&["config", "show"], None);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("version 1") && shown.contains(&format!("${{ssm:{prefix}push-test-key}}")), "{shown}");
    assert!(!shown.contains("pushed-key-0123456789"), "{shown}");
}
