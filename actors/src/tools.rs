//! The tools an agent can call: their JSON Schemas, the checks on a call's
//! arguments, and the port that runs a checked call.
//!
//! Every provider sees the same catalog, and the arguments of every call are
//! validated against that same schema before anything runs, so what the model
//! is told and what is enforced cannot drift apart. A checked call becomes a
//! [`ToolInput`] with its values normalized (email lowercased, phone in E.164).

use std::sync::LazyLock;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ids::{AgentId, ConversationId, TenantId};
use crate::llm::{ToolCall, ToolResult, ToolSpec};
use crate::ports::StoreError;

pub const CAPTURE_LEAD: &str = "capture_lead";
pub const BOOK_APPOINTMENT: &str = "book_appointment";
pub const REQUEST_QUOTE: &str = "request_quote";
pub const ESCALATE_TO_HUMAN: &str = "escalate_to_human";

/// A tool's name as a metric label: the model may call a tool that does not
/// exist, and each invented name would otherwise be a new series.
pub fn metric_label(name: &str) -> &'static str {
    match name {
        CAPTURE_LEAD => CAPTURE_LEAD,
        BOOK_APPOINTMENT => BOOK_APPOINTMENT,
        REQUEST_QUOTE => REQUEST_QUOTE,
        ESCALATE_TO_HUMAN => ESCALATE_TO_HUMAN,
        _ => "unknown",
    }
}

/// Phone numbers typed without a country code are read as numbers of this
/// region (the PII scrubber's default too).
pub const NATIONAL_PHONE_REGION: phonenumber::country::Id = phonenumber::country::Id::US;

const NAME_MAX: usize = 200;
const EMAIL_MAX: usize = 254;
const PHONE_MAX: usize = 32;
const SHORT_TEXT_MAX: usize = 200;
const LONG_TEXT_MAX: usize = 2_000;

fn text(min: usize, max: usize) -> Value {
    json!({ "type": "string", "minLength": min, "maxLength": max })
}

fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: CAPTURE_LEAD.into(),
            description: "Save the visitor's contact details when they share an email address or \
                          phone number (at least one of the two)."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "name": text(1, NAME_MAX),
                    "email": { "type": "string", "format": "email", "maxLength": EMAIL_MAX },
                    "phone": {
                        "type": "string", "format": "phone", "maxLength": PHONE_MAX,
                        "description": "Preferably in international format, e.g. +14155550100"
                    }
                },
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: BOOK_APPOINTMENT.into(),
            description: "Request an appointment for the visitor; the team confirms the time."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "requested_time": {
                        "type": "string", "minLength": 1, "maxLength": SHORT_TEXT_MAX,
                        "description": "When the visitor wants to come, in their words"
                    },
                    "service": text(1, SHORT_TEXT_MAX),
                    "note": text(1, LONG_TEXT_MAX)
                },
                "required": ["requested_time"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: REQUEST_QUOTE.into(),
            description: "Ask the business for a price quote on the visitor's behalf.".into(),
            parameters: json!({
                "type": "object",
                "properties": { "details": text(1, LONG_TEXT_MAX) },
                "required": ["details"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: ESCALATE_TO_HUMAN.into(),
            description: "Hand the conversation to a person at the business.".into(),
            parameters: json!({
                "type": "object",
                "properties": { "reason": text(1, SHORT_TEXT_MAX * 2) },
                "required": ["reason"],
                "additionalProperties": false
            }),
        },
    ]
}

/// The catalog and, per tool, its compiled validator (built once).
struct Catalog {
    specs: Vec<ToolSpec>,
    validators: Vec<jsonschema::Validator>,
}

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    let specs = specs();
    let validators = specs
        .iter()
        .map(|spec| {
            jsonschema::options()
                .should_validate_formats(true)
                .with_format("email", |value: &str| {
                    crate::contact::parse_email(value).is_ok()
                })
                .with_format("phone", |value: &str| {
                    crate::contact::parse_phone(value, Some(NATIONAL_PHONE_REGION)).is_ok()
                })
                .build(&spec.parameters)
                .expect("the tool catalog's schemas compile")
        })
        .collect();
    Catalog { specs, validators }
});

/// The catalog offered to the model on every turn.
pub fn catalog() -> Vec<ToolSpec> {
    CATALOG.specs.clone()
}

/// A call whose arguments passed its tool's schema, values normalized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "tool", rename_all = "snake_case")]
pub enum ToolInput {
    CaptureLead {
        name: Option<String>,
        email: Option<String>,
        phone: Option<String>,
    },
    BookAppointment {
        requested_time: String,
        service: Option<String>,
        note: Option<String>,
    },
    RequestQuote {
        details: String,
    },
    EscalateToHuman {
        reason: String,
    },
}

/// Why a call's arguments were refused: one plain message per problem, fit
/// for the model to read and correct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgumentErrors(pub Vec<String>);

impl std::fmt::Display for ArgumentErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

fn trimmed(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

#[derive(Deserialize)]
struct LeadArguments {
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

#[derive(Deserialize)]
struct BookingArguments {
    requested_time: String,
    service: Option<String>,
    note: Option<String>,
}

#[derive(Deserialize)]
struct QuoteArguments {
    details: String,
}

#[derive(Deserialize)]
struct EscalationArguments {
    reason: String,
}

/// Checks `call` against its tool's schema and normalizes its values.
pub fn check(call: &ToolCall) -> Result<ToolInput, ArgumentErrors> {
    let catalog = &*CATALOG;
    let Some(position) = catalog.specs.iter().position(|spec| spec.name == call.name) else {
        return Err(ArgumentErrors(vec![format!(
            "there is no tool named {:?}",
            call.name
        )]));
    };
    let problems: Vec<String> = catalog.validators[position]
        .iter_errors(&call.arguments)
        .map(
            |error| match error.instance_path().to_string().trim_start_matches('/') {
                "" => error.to_string(),
                field => format!("{field}: {error}"),
            },
        )
        .collect();
    if !problems.is_empty() {
        return Err(ArgumentErrors(problems));
    }
    let parse = |reason: serde_json::Error| ArgumentErrors(vec![reason.to_string()]);
    let arguments = call.arguments.clone();
    match call.name.as_str() {
        CAPTURE_LEAD => {
            let lead: LeadArguments = serde_json::from_value(arguments).map_err(parse)?;
            // The schema checked the formats; these only normalize.
            let email = trimmed(lead.email)
                .map(|e| crate::contact::parse_email(&e))
                .transpose()
                .map_err(|e| ArgumentErrors(vec![e]))?;
            let phone = trimmed(lead.phone)
                .map(|p| crate::contact::parse_phone(&p, Some(NATIONAL_PHONE_REGION)))
                .transpose()
                .map_err(|e| ArgumentErrors(vec![e]))?;
            if email.is_none() && phone.is_none() {
                return Err(ArgumentErrors(vec![
                    "an email address or a phone number is required".into(),
                ]));
            }
            Ok(ToolInput::CaptureLead {
                name: trimmed(lead.name),
                email,
                phone,
            })
        }
        BOOK_APPOINTMENT => {
            let booking: BookingArguments = serde_json::from_value(arguments).map_err(parse)?;
            Ok(ToolInput::BookAppointment {
                requested_time: booking.requested_time.trim().to_owned(),
                service: trimmed(booking.service),
                note: trimmed(booking.note),
            })
        }
        REQUEST_QUOTE => {
            let quote: QuoteArguments = serde_json::from_value(arguments).map_err(parse)?;
            Ok(ToolInput::RequestQuote {
                details: quote.details.trim().to_owned(),
            })
        }
        ESCALATE_TO_HUMAN => {
            let escalation: EscalationArguments =
                serde_json::from_value(arguments).map_err(parse)?;
            Ok(ToolInput::EscalateToHuman {
                reason: escalation.reason.trim().to_owned(),
            })
        }
        other => unreachable!("tool {other} is in the catalog but has no arguments type"),
    }
}

/// How a run ended, as `agent_action_runs.status` records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Succeeded,
    /// The arguments failed the tool's schema: nothing was done.
    Rejected,
    /// The tool could not do its work (e.g. the store was unavailable).
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "succeeded" => Some(Self::Succeeded),
            "rejected" => Some(Self::Rejected),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A finished run: what the model reads next, and how it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolRun {
    pub status: RunStatus,
    pub output: Value,
}

impl ToolRun {
    pub fn rejected(errors: &ArgumentErrors) -> Self {
        Self {
            status: RunStatus::Rejected,
            output: json!({ "status": "rejected", "errors": errors.0 }),
        }
    }

    /// The tool could not be reached (the store is down): nothing is known
    /// to be done, and the model is told so.
    pub fn unavailable() -> Self {
        Self {
            status: RunStatus::Failed,
            output: json!({
                "status": "failed",
                "error": "this tool is unavailable right now; nothing was done"
            }),
        }
    }

    /// What the model reads in the next round.
    pub fn result_for(&self, call: &ToolCall) -> ToolResult {
        ToolResult {
            call_id: call.id.clone(),
            output: self.output.clone(),
            is_error: self.status != RunStatus::Succeeded,
        }
    }
}

/// Where the tools act: leads, bookings, quotes, escalations, each with its
/// outbox event and its `agent_action_runs` row in one unit of work.
#[async_trait]
pub trait ToolRunner: Send + Sync + 'static {
    /// Runs `call` once per conversation and call id: a call id already run
    /// answers its recorded run without doing the work again. `checked` is
    /// [`check`]'s verdict on the call; a refused call is recorded, not run.
    async fn run(
        &self,
        tenant: TenantId,
        agent: AgentId,
        conversation: ConversationId,
        call: &ToolCall,
        checked: Result<ToolInput, ArgumentErrors>,
    ) -> Result<ToolRun, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: Value) -> ToolCall {
        ToolCall {
            id: "call_1".into(),
            name: name.into(),
            arguments,
        }
    }

    #[test]
    fn a_lead_is_normalized() {
        let input = check(&call(
            CAPTURE_LEAD,
            json!({"name": " Ana ", "email": "Ana@Example.com", "phone": "(415) 555-2671"}),
        ))
        .unwrap();
        assert_eq!(
            input,
            ToolInput::CaptureLead {
                name: Some("Ana".into()),
                email: Some("ana@example.com".into()),
                phone: Some("+14155552671".into()),
            }
        );
    }

    #[test]
    fn bad_arguments_are_refused_with_the_field_named() {
        let cases = [
            (CAPTURE_LEAD, json!({"email": "ana@"}), "email"),
            (CAPTURE_LEAD, json!({"phone": "12"}), "phone"),
            (
                CAPTURE_LEAD,
                json!({"name": "Ana"}),
                "an email address or a phone number",
            ),
            (
                CAPTURE_LEAD,
                json!({"email": "a@b.co", "extra": 1}),
                "extra",
            ),
            (CAPTURE_LEAD, json!({"email": 42}), "email"),
            (BOOK_APPOINTMENT, json!({}), "requested_time"),
            (
                BOOK_APPOINTMENT,
                json!({"requested_time": ""}),
                "requested_time",
            ),
            (
                REQUEST_QUOTE,
                json!({"details": "x".repeat(LONG_TEXT_MAX + 1)}),
                "details",
            ),
            (ESCALATE_TO_HUMAN, json!("angry"), "object"),
            ("delete_everything", json!({}), "no tool named"),
        ];
        for (tool, arguments, expected) in cases {
            let errors = check(&call(tool, arguments.clone())).unwrap_err();
            assert!(
                errors.to_string().contains(expected),
                "{tool} {arguments}: {errors}"
            );
        }
    }

    #[test]
    fn every_tool_in_the_catalog_accepts_a_minimal_valid_call() {
        let minimal = [
            (CAPTURE_LEAD, json!({"phone": "+442079460958"})),
            (BOOK_APPOINTMENT, json!({"requested_time": "Friday at 3"})),
            (REQUEST_QUOTE, json!({"details": "a new roof"})),
            (ESCALATE_TO_HUMAN, json!({"reason": "asked for a person"})),
        ];
        assert_eq!(minimal.len(), catalog().len());
        for (tool, arguments) in minimal {
            assert!(check(&call(tool, arguments)).is_ok(), "{tool}");
        }
    }
}
