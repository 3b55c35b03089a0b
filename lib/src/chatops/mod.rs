//! Chat operations: what people do from Mattermost itself. So far: the alert card's buttons.
//! (`/incident`, dialogs and OAuth are the incidents issue.)

pub mod action;
pub mod signing;
