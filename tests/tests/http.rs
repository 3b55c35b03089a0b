//! The routers, driven in-process through `tower::ServiceExt::oneshot`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use klaxon::app::AppState;
use klaxon::config::Config;
use klaxon::http::{BODY_LIMIT, ROUTES};
use serde_json::Value;
use tower::ServiceExt;

fn embedded() -> (AppState, tempfile::TempDir) {
    let (db, dir) = klaxon_tests::temp_db();
    (AppState::embedded(Config::empty(), db).expect("embedded state"), dir)
}

async fn call(router: axum::Router, method: &str, uri: &str, body: Body) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .unwrap();
    send(router, req).await
}

async fn send(router: axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let res = router.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn healthz_reports_ok_and_the_storage_kind() {
    let (state, _dir) = embedded();
    let (status, body) = call(klaxon::http::all(state), "GET", "/healthz", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["storage"], "embedded");
}

#[test]
fn every_listed_route_has_its_handler() {
    for r in ROUTES {
        assert!(klaxon::http::handler(r.path).is_some(), "{} has no handler", r.path);
    }
    assert!(klaxon::http::handler("/chatops/nothing").is_none());
}

#[tokio::test]
async fn unknown_paths_get_a_json_404_that_lists_the_real_routes() {
    let (state, _dir) = embedded();
    let (status, json) = call(klaxon::http::all(state), "POST", "/hooks/slack/x", Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json["error"]["code"], "not_found");
    assert!(json["error"]["message"].as_str().unwrap().contains("/hooks/particle/{source_id}"));
}

#[tokio::test]
async fn each_function_serves_only_its_own_routes() {
    let (state, _dir) = embedded();
    // No such route in this function: the router's 404.
    let (status, json) =
        call(klaxon::http::mattermost_webhook(state.clone()), "POST", "/hooks/particle/x", Body::empty()).await;
    assert_eq!((status, json["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    // The route exists here; the source does not.
    let (status, json) =
        call(klaxon::http::particle_webhook(state.clone()), "POST", "/hooks/particle/x", Body::empty()).await;
    assert_eq!((status, json["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_source")));
    // The slash command answers 200 even to an empty request (Mattermost shows only `text`).
    let (status, json) = call(klaxon::http::chatops(state.clone()), "POST", "/chatops/command", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(json["text"].as_str().unwrap().contains("nothing changed"), "{json}");
    for router in [klaxon::http::mattermost_webhook(state.clone()), klaxon::http::chatops(state)] {
        let (status, _) = call(router, "GET", "/healthz", Body::empty()).await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413() {
    let (state, _dir) = embedded();
    let req = Request::builder()
        .method("POST")
        .uri("/hooks/particle/x")
        .header("content-length", (BODY_LIMIT + 1).to_string())
        .body(Body::from(vec![b'a'; BODY_LIMIT + 1]))
        .unwrap();
    let (status, json) = send(klaxon::http::all(state), req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn healthz_on_dynamodb_reports_aws_storage() {
    let Some(endpoint) = klaxon_tests::aws_endpoint() else { return };
    let sdk = klaxon_tests::aws_sdk_config(&endpoint).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = klaxon_tests::unique_name("klaxon-health");
    klaxon::store::dynamodb::DynamoStore::create_table(&client, &table).await.unwrap();
    let state = klaxon_tests::aws_state(&endpoint, &table).await;
    let (status, body) = call(klaxon::http::all(state), "GET", "/healthz", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["storage"], "aws");
}

#[tokio::test]
async fn healthz_answers_503_when_the_store_is_unreachable() {
    // Nothing listens on port 9 of loopback: the store cannot answer.
    let state = klaxon_tests::aws_state("http://127.0.0.1:9", "no-such-table").await;
    let (status, body) = call(klaxon::http::all(state), "GET", "/healthz", Body::empty()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "store_unavailable");
}
