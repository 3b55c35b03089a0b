//! A typed client for exactly the Mattermost calls Klaxon makes (REST API v4 with the bot's
//! token, and incoming webhooks), with every failure classified as worth retrying or not
//! (../shared/reference/mattermost.md §3, §4, §8).

pub mod client;
pub mod error;
pub mod types;

pub use client::Mattermost;
pub use error::MattermostError;
pub use types::{
    Action, ActionOption, Attachment, Channel, CreateChannel, CreatePost, Field, Integration, Post, PostId, Team,
    TokenResponse, User, WebhookPost,
};
