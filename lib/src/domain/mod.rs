//! The domain core: alerts, incidents, urgency and their timelines.
//!
//! Pure by design: no I/O, no async, no AWS or Mattermost types. Every state change is a method
//! that either applies a transition and records it in the timeline, or returns a typed error that
//! says what is allowed instead and leaves the value untouched.

pub mod alert;
pub mod incident;
pub mod timeline;
pub mod urgency;

pub use alert::{Alert, AlertAction, AlertError, AlertStatus, Escalation, NewAlert};
pub use incident::{Incident, IncidentAction, IncidentError, IncidentId, IncidentStatus, NewIncident};
pub use timeline::{Actor, TimelineEntry};
pub use urgency::Urgency;
