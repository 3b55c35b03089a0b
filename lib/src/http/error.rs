//! The one error shape every route answers with: `{"error": {"code", "message"}}`.
//!
//! Answers to Mattermost also carry `text` (and `response_type: comment`): Mattermost ignores
//! the status code and the error object and posts only `text`, so without it the person who
//! typed the trigger would see nothing at all.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Also put the message into `text`, for Mattermost to post in the thread.
    pub chat: bool,
    /// Ties the answer to the log line that holds the detail.
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), chat: false, request_id: None }
    }

    /// A backend failure. `detail` may name the AWS account, role, table or file: it goes to the
    /// log only, under a request id; the caller, who may not be authenticated, gets `public`
    /// and the id.
    pub fn unavailable(code: &'static str, public: &str, detail: &dyn std::fmt::Display) -> Self {
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        tracing::error!(request_id = %request_id, code, detail = %detail, "request failed: backend unavailable");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            message: format!("{public} (request id {request_id})"),
            chat: false,
            request_id: Some(request_id),
        }
    }

    /// The answer goes to Mattermost: say it in `text` too.
    pub fn for_chat(mut self) -> Self {
        self.chat = true;
        self
    }
}

impl IntoResponse for ApiError {
    /// Logs the refusal (its code and message name the problem and never carry a secret or the
    /// body) and answers with the JSON error.
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), code = self.code, message = %self.message, "request failed");
        } else {
            tracing::warn!(status = self.status.as_u16(), code = self.code, message = %self.message, "request refused");
        }
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(id) = &self.request_id {
            body["request_id"] = json!(id);
        }
        if self.chat {
            body["text"] = json!(self.message);
            body["response_type"] = json!("comment");
        }
        (self.status, axum::Json(body)).into_response()
    }
}
