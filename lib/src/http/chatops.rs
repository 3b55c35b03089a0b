//! The chatops routes that are built: the alert card's buttons, the `/incident` command and
//! its dialog. Every answer is HTTP 200: Mattermost shows anything else as a bare error.

use super::BODY_LIMIT;
use super::intake::INTAKE_DEADLINE;
use crate::app::AppState;
use crate::chatops::action::{self, ActionRequest};
use crate::chatops::dialog::{self, Submission};
use crate::chatops::slash::{self, SlashRequest};
use crate::embedded::with_deadline;
use crate::ingest::mattermost::Encoding;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use serde_json::{Value, json};

/// `POST /chatops/action`. Always 200: Mattermost shows the clicker a bare "integration error"
/// for anything else, so refusals are said in `ephemeral_text`.
pub async fn button(State(state): State<AppState>, body: Body) -> Json<Value> {
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return Json(json!({ "ephemeral_text": "The click could not be read; nothing changed." }));
    };
    let Ok(req) = serde_json::from_slice::<ActionRequest>(&bytes) else {
        return Json(json!({ "ephemeral_text": "This request is not a Mattermost button click; nothing changed." }));
    };
    Json(with_deadline(INTAKE_DEADLINE, action::handle(&state, &req)).await)
}

/// `POST /chatops/command` (form) or `GET` (query), as the slash command is configured.
pub async fn command(
    State(state): State<AppState>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
    body: Body,
) -> Json<Value> {
    let raw = if method == axum::http::Method::GET {
        uri.query().unwrap_or_default().as_bytes().to_vec()
    } else {
        match axum::body::to_bytes(body, BODY_LIMIT).await {
            Ok(b) => b.to_vec(),
            Err(_) => return Json(slash::ephemeral("The command could not be read; nothing changed.")),
        }
    };
    let Ok(req) = serde_urlencoded::from_bytes::<SlashRequest>(&raw) else {
        return Json(slash::ephemeral("This request is not a Mattermost slash command; nothing changed."));
    };
    let authorization = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let answer = with_deadline(INTAKE_DEADLINE, slash::handle(&state, &req, authorization)).await;
    Json(answer)
}

/// `POST /chatops/dialog`: the incident dialog's submission.
pub async fn dialog_submission(State(state): State<AppState>, body: Body) -> Json<Value> {
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return Json(json!({ "error": "The form could not be read; nothing was declared." }));
    };
    let Ok(submission) = serde_json::from_slice::<Submission>(&bytes) else {
        return Json(json!({ "error": "This request is not a Mattermost dialog submission; nothing was declared." }));
    };
    Json(with_deadline(INTAKE_DEADLINE, dialog::submit(&state, &submission)).await)
}

/// `POST /chatops/mirror`: an outgoing webhook mirroring incident-channel messages.
pub async fn mirror(State(state): State<AppState>, headers: axum::http::HeaderMap, body: Body) -> Json<Value> {
    let media = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let encoding = if media.starts_with("application/json") { Encoding::Json } else { Encoding::Form };
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return Json(json!({ "text": "The message could not be read; nothing was recorded." }));
    };
    Json(with_deadline(INTAKE_DEADLINE, crate::chatops::mirror::handle(&state, encoding, &bytes)).await)
}

/// `GET /chatops/oauth/callback`: a page for the person who just approved (or refused).
pub async fn oauth_callback(
    State(state): State<AppState>,
    axum::extract::Query(cb): axum::extract::Query<crate::chatops::oauth::Callback>,
) -> (axum::http::StatusCode, axum::response::Html<String>) {
    let page = with_deadline(INTAKE_DEADLINE, crate::chatops::oauth::callback(&state, &cb)).await;
    let status = if page.ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::BAD_REQUEST };
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Klaxon: {title}</title></head>\
         <body style=\"font-family: sans-serif; max-width: 40em; margin: 4em auto\"><h1>{title}</h1><p>{text}</p></body></html>",
        title = escape(page.title),
        text = escape(&page.text)
    );
    (status, axum::response::Html(html))
}
