//! What a failed Mattermost call means for the job that made it.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MattermostError {
    /// Worth trying again later: 5xx, 429, a timeout, a refused connection, a create still in
    /// flight. `retry_after` is what a 429 asked for.
    #[error("Mattermost is unavailable ({what}); the notification will be retried")]
    Transient { what: String, retry_after: Option<Duration> },
    /// Will fail the same way until an admin changes something: `fix` says what.
    #[error("Mattermost refused the notification ({what}); {fix}")]
    Permanent { status: u16, id: String, what: String, fix: String },
}

impl MattermostError {
    pub fn is_transient(&self) -> bool {
        matches!(self, MattermostError::Transient { .. })
    }
}
