//! Chat operations: what people do from Mattermost itself: the alert card's buttons, and the
//! `/incident` command with its dialog.

pub mod action;
pub mod command;
pub mod dialog;
pub mod mirror;
pub mod oauth;
pub mod signing;
pub mod slash;
