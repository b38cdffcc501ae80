//! agentry's pipeline stages and the ports they depend on.
//!
//! This crate knows nothing of HTTP, SQL or Redis wire details: it declares the
//! ports it needs as traits ([`ports`]) and the service crate implements them.
//! Identifier newtypes ([`ids`]) and the redacting [`Secret`] wrapper live here
//! because both sides of every port speak them.

pub mod ids;
pub mod knowledge;
pub mod llm;
pub mod ports;
pub mod secret;
pub mod tools;

pub use ids::{AgentId, ConversationId, OperatorId, TenantId, UserId, WidgetId};
pub use secret::Secret;
