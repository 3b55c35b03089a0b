//! A fault-injecting DynamoDB endpoint: a proxy in front of moto that answers chosen calls with
//! the errors real DynamoDB produces and moto never does (`TransactionConflict`, throttling,
//! `AccessDenied`), in DynamoDB's JSON protocol, and passes everything else through (SQS too:
//! moto serves both on one port). It also counts and logs the calls, with their times.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// One canned answer for the next call of an operation.
#[derive(Debug, Clone)]
struct Fault {
    status: u16,
    body: String,
}

#[derive(Default)]
struct Script {
    faults: HashMap<String, VecDeque<Fault>>,
    calls: HashMap<String, usize>,
    /// Every call: its operation, when it arrived and when it was answered.
    log: Vec<Call>,
}

/// One call through the proxy.
#[derive(Debug, Clone)]
pub struct Call {
    pub operation: String,
    pub start: std::time::Instant,
    pub end: std::time::Instant,
}

/// How many round trips a caller waited for one after another: calls that overlap in time
/// were made side by side and count once; a call that starts after every earlier one ended
/// is another round trip.
pub fn sequential_round_trips(calls: &[Call]) -> usize {
    let mut spans: Vec<(std::time::Instant, std::time::Instant)> = calls.iter().map(|c| (c.start, c.end)).collect();
    spans.sort();
    let mut trips = 0;
    let mut reach: Option<std::time::Instant> = None;
    for (start, end) in spans {
        match reach {
            Some(r) if start <= r => reach = Some(r.max(end)),
            _ => {
                trips += 1;
                reach = Some(end);
            }
        }
    }
    trips
}

#[derive(Clone)]
pub struct FaultyDynamo {
    pub url: String,
    script: Arc<Mutex<Script>>,
}

impl FaultyDynamo {
    /// Starts the proxy on a free loopback port, in front of `upstream` (moto).
    pub async fn start(upstream: &str) -> FaultyDynamo {
        let script = Arc::new(Mutex::new(Script::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let (upstream, shared) = (upstream.to_string(), script.clone());
        let client = reqwest::Client::new();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (upstream, script, client) = (upstream.clone(), shared.clone(), client.clone());
            async move { handle(&upstream, &script, &client, headers, body).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        FaultyDynamo { url, script }
    }

    /// The next `times` calls of `operation` (e.g. `TransactWriteItems`) get DynamoDB's error
    /// `error_type` (e.g. `TransactionCanceledException`) with `extra` fields merged into the body.
    pub fn fail_next(&self, operation: &str, times: usize, status: u16, error_type: &str, extra: serde_json::Value) {
        let mut body = serde_json::json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{error_type}"),
            "message": format!("{error_type} injected by the test"),
        });
        if let (Some(b), serde_json::Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        let mut s = self.script.lock().expect("script lock");
        let queue = s.faults.entry(operation.to_string()).or_default();
        for _ in 0..times {
            queue.push_back(Fault { status, body: body.to_string() });
        }
    }

    /// A `TransactWriteItems` cancellation with one reason per write, e.g.
    /// `["None", "TransactionConflict"]`, as DynamoDB sends it.
    pub fn cancel_next_transactions(&self, times: usize, reasons: &[&str]) {
        let reasons: Vec<serde_json::Value> = reasons
            .iter()
            .map(|code| match *code {
                "None" => serde_json::json!({ "Code": "None" }),
                code => serde_json::json!({ "Code": code, "Message": format!("{code} injected by the test") }),
            })
            .collect();
        self.fail_next(
            "TransactWriteItems",
            times,
            400,
            "TransactionCanceledException",
            serde_json::json!({ "CancellationReasons": reasons }),
        );
    }

    /// How many calls of `operation` reached the proxy (faulted or passed through).
    pub fn calls(&self, operation: &str) -> usize {
        self.script.lock().expect("script lock").calls.get(operation).copied().unwrap_or(0)
    }

    /// Every call logged so far (use its length as a mark, and [`FaultyDynamo::calls_since`]).
    pub fn log_len(&self) -> usize {
        self.script.lock().expect("script lock").log.len()
    }

    /// The calls after `mark` (a [`FaultyDynamo::log_len`]).
    pub fn calls_since(&self, mark: usize) -> Vec<Call> {
        self.script.lock().expect("script lock").log[mark..].to_vec()
    }

    /// Faults still waiting to be served.
    pub fn pending_faults(&self) -> usize {
        self.script.lock().expect("script lock").faults.values().map(VecDeque::len).sum()
    }
}

async fn handle(
    upstream: &str,
    script: &Mutex<Script>,
    client: &reqwest::Client,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let operation = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split('.').nth(1))
        .unwrap_or_default()
        .to_string();
    let start = std::time::Instant::now();
    let fault = {
        let mut s = script.lock().expect("script lock");
        *s.calls.entry(operation.clone()).or_default() += 1;
        s.faults.get_mut(&operation).and_then(VecDeque::pop_front)
    };
    let response = forward(upstream, client, headers, body, fault).await;
    script.lock().expect("script lock").log.push(Call { operation, start, end: std::time::Instant::now() });
    response
}

async fn forward(
    upstream: &str,
    client: &reqwest::Client,
    headers: HeaderMap,
    body: Bytes,
    fault: Option<Fault>,
) -> Response {
    if let Some(f) = fault {
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, [("content-type", "application/x-amz-json-1.0")], f.body).into_response();
    }
    let mut req = client.post(upstream).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            req = req.header(name, value);
        }
    }
    match req.send().await {
        Ok(res) => {
            let status = StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut out = Response::builder().status(status);
            for (name, value) in res.headers() {
                if name != "content-length" && name != "transfer-encoding" && name != "connection" {
                    out = out.header(name, value);
                }
            }
            let bytes = res.bytes().await.unwrap_or_default();
            out.body(Body::from(bytes)).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
