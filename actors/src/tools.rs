//! The tools an agent can call, by name, with their JSON Schemas.
//!
//! Every provider sees the same catalog; the offline responder emits these
//! calls deterministically. Executing a call (lead capture, booking, quote,
//! escalation) records an action run and an outbox event.

use serde_json::json;

use crate::llm::ToolSpec;

pub const CAPTURE_LEAD: &str = "capture_lead";
pub const BOOK_APPOINTMENT: &str = "book_appointment";
pub const REQUEST_QUOTE: &str = "request_quote";
pub const ESCALATE_TO_HUMAN: &str = "escalate_to_human";

/// The catalog offered to the model on every turn.
pub fn catalog() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: CAPTURE_LEAD.into(),
            description: "Save the visitor's contact details when they share an email address or phone number.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "name": { "type": "string" },
                    "email": { "type": "string" },
                    "phone": { "type": "string" },
                    "note": { "type": "string" }
                },
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: BOOK_APPOINTMENT.into(),
            description: "Request an appointment for the visitor.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "requested_time": { "type": "string", "description": "When the visitor wants to come, in their words" },
                    "service": { "type": "string" },
                    "note": { "type": "string" }
                },
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: REQUEST_QUOTE.into(),
            description: "Ask the business for a price quote on the visitor's behalf.".into(),
            parameters: json!({
                "type": "object",
                "properties": { "details": { "type": "string" } },
                "required": ["details"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: ESCALATE_TO_HUMAN.into(),
            description: "Hand the conversation to a person at the business.".into(),
            parameters: json!({
                "type": "object",
                "properties": { "reason": { "type": "string" } },
                "required": ["reason"],
                "additionalProperties": false
            }),
        },
    ]
}
