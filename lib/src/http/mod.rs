//! The HTTP routers: one per Lambda function, and all of them together for `klaxon serve`.
//!
//! Every route in [`ROUTES`] has its handler in [`handler`]; a test checks that none is missing.

mod chatops;
mod error;
mod intake;

pub use error::ApiError;
pub use intake::INTAKE_DEADLINE;

use crate::app::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

/// Mattermost posts are at most 16383 characters, Particle events a few KB; 256 KiB leaves room
/// for form encoding and refuses anything else early.
pub const BODY_LIMIT: usize = 256 * 1024;

/// How long `/healthz` waits for the store.
pub const HEALTH_DEADLINE: std::time::Duration = std::time::Duration::from_millis(800);

/// A route's path, with the Lambda function that serves it, for start-up output and docs.
pub struct RouteInfo {
    pub function: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub purpose: &'static str,
}

pub const ROUTES: &[RouteInfo] = &[
    RouteInfo {
        function: "mattermost-webhook",
        method: "POST",
        path: "/hooks/mattermost/{source_id}",
        purpose: "Mattermost outgoing webhook (trigger words)",
    },
    RouteInfo {
        function: "particle-webhook",
        method: "POST",
        path: "/hooks/particle/{source_id}",
        purpose: "Particle webhook (ALERT / RESOLVE)",
    },
    RouteInfo {
        function: "chatops",
        // Slash commands are configured as POST or GET (mattermost.md §2.1).
        method: "GET, POST",
        path: "/chatops/command",
        purpose: "/incident slash command",
    },
    RouteInfo {
        function: "chatops",
        method: "POST",
        path: "/chatops/dialog",
        purpose: "interactive dialog submissions",
    },
    RouteInfo { function: "chatops", method: "POST", path: "/chatops/action", purpose: "alert card button clicks" },
    RouteInfo {
        function: "chatops",
        method: "POST",
        path: "/chatops/mirror",
        purpose: "incident-channel replies (outgoing webhook)",
    },
    RouteInfo {
        function: "chatops",
        method: "GET",
        path: "/chatops/oauth/callback",
        purpose: "/incident connect (OAuth 2.0 callback)",
    },
];

async fn healthz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    // A read of a key that never exists proves the store answers. Load balancers and monitors
    // give up after a second or two, so this does not wait longer than that.
    let probe = crate::embedded::with_deadline(HEALTH_DEADLINE, state.store.probe()).await;
    probe.map_err(|e| ApiError::unavailable("store_unavailable", "the store is not reachable", &e))?;
    Ok(Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "storage": state.storage.kind(),
    })))
}

/// Refuses a declared oversized body with the JSON error shape before anything reads it;
/// `RequestBodyLimitLayer` still guards bodies that do not declare their length.
async fn limit_declared_body(req: Request, next: Next) -> Result<axum::response::Response, ApiError> {
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = declared.filter(|len| *len > BODY_LIMIT) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is {len} bytes, over the {BODY_LIMIT}-byte limit; send a shorter message"),
        ));
    }
    Ok(next.run(req).await)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    let paths: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}; Klaxon serves /healthz and {}", uri.path(), paths.join(", ")),
    )
}

/// Another method on a known path: the JSON error, with `Allow` as HTTP asks.
async fn wrong_method(method: Method, matched: Option<MatchedPath>) -> axum::response::Response {
    let route = matched.map(|m| m.as_str().to_string()).unwrap_or_default();
    let allowed =
        if route == "/healthz" { "GET" } else { ROUTES.iter().find(|r| r.path == route).map_or("POST", |r| r.method) };
    let error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not accepted on {route}; use {allowed}"),
    );
    let mut response = error.into_response();
    response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allowed));
    response
}

/// The handler of a route in [`ROUTES`].
pub fn handler(path: &str) -> Option<MethodRouter<AppState>> {
    Some(match path {
        "/hooks/mattermost/{source_id}" => post(intake::mattermost_hook),
        "/hooks/particle/{source_id}" => post(intake::particle_hook),
        "/chatops/action" => post(chatops::button),
        "/chatops/command" => post(chatops::command).get(chatops::command),
        "/chatops/dialog" => post(chatops::dialog_submission),
        "/chatops/mirror" => post(chatops::mirror),
        "/chatops/oauth/callback" => get(chatops::oauth_callback),
        _ => return None,
    })
}

fn routes_of(function: &str) -> Router<AppState> {
    ROUTES
        .iter()
        .filter(|r| r.function == function)
        .filter_map(|r| Some((r.path, handler(r.path)?)))
        .fold(Router::new(), |router, (path, h)| router.route(path, h.fallback(wrong_method)))
}

/// Adds what every router shares: `/healthz`, the JSON 404, the body limit and request tracing.
fn finish(router: Router<AppState>, state: AppState) -> Router {
    router
        .route("/healthz", get(healthz).fallback(wrong_method))
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(middleware::from_fn(limit_declared_body))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    // The route template, never the URI: query strings may carry keys.
                    let route = req.extensions().get::<MatchedPath>().map_or("(unmatched)", |m| m.as_str());
                    tracing::info_span!("request", method = %req.method(), route = %route)
                })
                .on_request(())
                // One line per request at debug only: each intake request logs its outcome (and
                // every refusal or failure logs why) inside this span, which names the route. At
                // info, with a warning per notification job, it cost a storm 10-15 % of its
                // new alerts a second (`lib/benches/load/README.md`).
                .on_response(DefaultOnResponse::new().level(tracing::Level::DEBUG))
                .on_failure(()),
        )
        .with_state(state)
}

pub fn mattermost_webhook(state: AppState) -> Router {
    finish(routes_of("mattermost-webhook"), state)
}

pub fn particle_webhook(state: AppState) -> Router {
    finish(routes_of("particle-webhook"), state)
}

pub fn chatops(state: AppState) -> Router {
    finish(routes_of("chatops"), state)
}

/// Every route of every function, for `klaxon serve`.
pub fn all(state: AppState) -> Router {
    let router = routes_of("mattermost-webhook").merge(routes_of("particle-webhook")).merge(routes_of("chatops"));
    finish(router, state)
}
