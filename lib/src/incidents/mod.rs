//! Incidents from chat: declaring them, their dedicated channels, their lifecycle, and what
//! Mattermost is told about them.

pub mod channel_name;
pub mod mirror;
pub mod render;
pub mod service;
