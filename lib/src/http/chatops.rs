//! The chatops routes that are built: the alert card's buttons.

use super::BODY_LIMIT;
use super::intake::INTAKE_DEADLINE;
use crate::app::AppState;
use crate::chatops::action::{self, ActionRequest};
use crate::embedded::with_deadline;
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
