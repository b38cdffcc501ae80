//! The tools' effects in PostgreSQL: each run is one unit of work holding
//! what the tool changed (a lead, a booking, a quote request, a conversation
//! waiting for a person), the outbox event that describes it, and the run's
//! `agent_action_runs` row. So an event exists exactly when its data does,
//! and a run the visitor is told about is a committed one.
//!
//! The run's arguments are personal data (a lead's contact details, a
//! booking's free text): the row keeps their shape, and the values go sealed
//! under the conversation's subject key (see [`crate::privacy`]), read with
//! the replay check and minted at the conversation's first run.

use std::sync::Arc;
use std::time::Instant;

use agentry_actors::llm::ToolCall;
use agentry_actors::ports::StoreError;
use agentry_actors::tools::{ArgumentErrors, RunStatus, ToolInput, ToolRun, ToolRunner};
use agentry_actors::{AgentId, ConversationId, TenantId};
use async_trait::async_trait;
use serde_json::{json, Value};
use uuid::Uuid;

use super::leads::{self, Contact, Lead};
use super::{conversations, outbox, DbError, Store, TenantTx};
use crate::crypto::Keyring;
use crate::live::{LiveEvent, LiveHub};
use crate::privacy::runs::{self, SealedRun};

pub struct PgToolRunner {
    store: Store,
    keyring: Arc<Keyring>,
    live: Arc<LiveHub>,
}

impl PgToolRunner {
    pub fn new(store: Store, keyring: Arc<Keyring>, live: Arc<LiveHub>) -> Self {
        Self {
            store,
            keyring,
            live,
        }
    }
}

/// Who and where a run acts for.
struct RunScope {
    agent: AgentId,
    conversation: Uuid,
}

#[async_trait]
impl ToolRunner for PgToolRunner {
    async fn run(
        &self,
        tenant: TenantId,
        agent: AgentId,
        conversation: ConversationId,
        call: &ToolCall,
        checked: Result<ToolInput, ArgumentErrors>,
    ) -> Result<ToolRun, StoreError> {
        let started = Instant::now();
        let scope = RunScope {
            agent,
            conversation: conversation.as_uuid(),
        };
        let mut tx = self.store.tenant(tenant).await?;
        let prior = runs::prior(&mut tx, scope.conversation, &call.id).await?;
        if let Some(recorded) = runs::replay(&self.keyring, tenant, &prior) {
            return Ok(recorded);
        }
        let key = match prior.key {
            Some(ref stored) => runs::open_key(&self.keyring, tenant, stored)?,
            None => runs::mint_key(&mut tx, &self.keyring, scope.conversation).await?,
        };
        let run = match checked {
            Ok(input) => act(&mut tx, &scope, &input).await?,
            Err(errors) => ToolRun::rejected(&errors),
        };
        let sealed = SealedRun::new(&key, tenant, &call.arguments, &run);
        let inserted = record_run(&mut tx, &scope, call, &run, &sealed, started).await?;
        if !inserted {
            // Another instance ran the same call meanwhile: its run stands, ours rolls back.
            drop(tx);
            let mut tx = self.store.tenant(tenant).await?;
            let prior = runs::prior(&mut tx, scope.conversation, &call.id).await?;
            return runs::replay(&self.keyring, tenant, &prior)
                .ok_or_else(|| StoreError::Unavailable("a concurrent run vanished".into()));
        }
        // A conversation now waiting for a person is announced to the
        // tenant's dashboards as the run's transaction left it, once committed.
        let escalated = match run.output["status"] == "waiting_for_human" {
            true => Some(conversations::get(&mut tx, scope.conversation).await?),
            false => None,
        };
        tx.commit().await?;
        if let Some(conversation_summary) = escalated {
            let event = LiveEvent::Conversation {
                conversation: conversation_summary,
            };
            self.live.announce(tenant, conversation, event).await;
        }
        Ok(run)
    }
}

/// Appends the run's audit row, its personal fields sealed; `false` when the
/// call id was already recorded.
async fn record_run(
    tx: &mut TenantTx,
    scope: &RunScope,
    call: &ToolCall,
    run: &ToolRun,
    sealed: &SealedRun,
    started: Instant,
) -> Result<bool, DbError> {
    let tenant = tx.tenant();
    let inserted = sqlx::query(
        "INSERT INTO agent_action_runs
            (id, tenant_id, agent_id, conversation_id, tool, status, input, output, call_id,
             duration_ms, subject_key_id, input_sealed, output_sealed)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (tenant_id, conversation_id, call_id) WHERE call_id IS NOT NULL DO NOTHING",
    )
    .bind(sealed.id)
    .bind(tenant.as_uuid())
    .bind(scope.agent.as_uuid())
    .bind(scope.conversation)
    .bind(&call.name)
    .bind(run.status.as_str())
    .bind(&sealed.input_shape)
    .bind(&sealed.output)
    .bind(&call.id)
    .bind(i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX))
    .bind(sealed.key_id)
    .bind(&sealed.input_sealed)
    .bind(&sealed.output_sealed)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Does what a checked call asks, with its outbox event, in `tx`.
async fn act(tx: &mut TenantTx, scope: &RunScope, input: &ToolInput) -> Result<ToolRun, DbError> {
    let done = |output: Value| ToolRun {
        status: RunStatus::Succeeded,
        output,
    };
    match input {
        ToolInput::CaptureLead { name, email, phone } => {
            let contact = Contact {
                name: name.as_deref(),
                email: email.as_deref(),
                phone: phone.as_deref(),
            };
            let (lead, change) =
                leads::find_or_create(tx, &contact, Some(scope.conversation)).await?;
            attach_lead(tx, scope, lead.id).await?;
            if let Some(event) = change.event_type() {
                outbox::append(
                    tx,
                    event,
                    &json!({ "lead": lead, "conversation_id": scope.conversation }),
                )
                .await?;
            }
            Ok(done(json!({
                "status": "saved",
                "new_contact": change == leads::LeadChange::Created,
            })))
        }
        ToolInput::BookAppointment {
            requested_time,
            service,
            note,
        } => {
            let lead = conversation_lead(tx, scope).await?;
            let id = Uuid::now_v7();
            let tenant = tx.tenant();
            sqlx::query(
                "INSERT INTO bookings (id, tenant_id, conversation_id, lead_id, requested_time, service, note)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(tenant.as_uuid())
            .bind(scope.conversation)
            .bind(lead.as_ref().map(|l| l.id))
            .bind(requested_time)
            .bind(service)
            .bind(note)
            .execute(tx.conn())
            .await?;
            let booking = json!({
                "id": id, "requested_time": requested_time, "service": service, "note": note,
            });
            outbox::append(
                tx,
                "booking.requested",
                &event(scope, "booking", booking, &lead),
            )
            .await?;
            Ok(done(requested(&lead)))
        }
        ToolInput::RequestQuote { details } => {
            let lead = conversation_lead(tx, scope).await?;
            let id = Uuid::now_v7();
            let tenant = tx.tenant();
            sqlx::query(
                "INSERT INTO quote_requests (id, tenant_id, conversation_id, lead_id, details)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(tenant.as_uuid())
            .bind(scope.conversation)
            .bind(lead.as_ref().map(|l| l.id))
            .bind(details)
            .execute(tx.conn())
            .await?;
            let quote = json!({ "id": id, "details": details });
            outbox::append(
                tx,
                "quote.requested",
                &event(scope, "quote_request", quote, &lead),
            )
            .await?;
            Ok(done(requested(&lead)))
        }
        ToolInput::EscalateToHuman { reason } => {
            let tenant = tx.tenant();
            // Only an open conversation escalates: a second call while it
            // waits neither changes it nor emits a second event.
            let escalated: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
                "UPDATE conversations
                 SET status = 'waiting_for_human', escalated_at = now(), escalation_reason = $3
                 WHERE tenant_id = $1 AND id = $2 AND status = 'open'
                 RETURNING escalated_at",
            )
            .bind(tenant.as_uuid())
            .bind(scope.conversation)
            .bind(reason)
            .fetch_optional(tx.conn())
            .await?;
            let Some(escalated_at) = escalated else {
                return Ok(done(json!({ "status": "already_waiting" })));
            };
            let lead = conversation_lead(tx, scope).await?;
            let escalation = json!({ "reason": reason, "escalated_at": escalated_at });
            outbox::append(
                tx,
                "support.escalated",
                &event(scope, "escalation", escalation, &lead),
            )
            .await?;
            Ok(done(json!({ "status": "waiting_for_human" })))
        }
    }
}

/// A booking's or quote's result: the model should ask for contact details
/// when the team has none to answer with.
fn requested(lead: &Option<Lead>) -> Value {
    json!({ "status": "requested", "contact_needed": lead.is_none() })
}

/// An event's payload: what happened, the lead it concerns (if known), and where.
fn event(scope: &RunScope, kind: &str, what: Value, lead: &Option<Lead>) -> Value {
    json!({
        kind: what,
        "lead": lead,
        "conversation_id": scope.conversation,
        "agent_id": scope.agent.as_uuid(),
    })
}

/// Makes `lead` the conversation's, and gives it the bookings and quote
/// requests made before the visitor left contact details.
async fn attach_lead(tx: &mut TenantTx, scope: &RunScope, lead: Uuid) -> Result<(), DbError> {
    let tenant = tx.tenant();
    sqlx::query(
        "WITH conversation AS (
             UPDATE conversations SET lead_id = $3 WHERE tenant_id = $1 AND id = $2
         ), booked AS (
             UPDATE bookings SET lead_id = $3
             WHERE tenant_id = $1 AND conversation_id = $2 AND lead_id IS NULL
         )
         UPDATE quote_requests SET lead_id = $3
         WHERE tenant_id = $1 AND conversation_id = $2 AND lead_id IS NULL",
    )
    .bind(tenant.as_uuid())
    .bind(scope.conversation)
    .bind(lead)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The lead the conversation is with, if the visitor left contact details.
async fn conversation_lead(tx: &mut TenantTx, scope: &RunScope) -> Result<Option<Lead>, DbError> {
    let tenant = tx.tenant();
    let lead: Option<Uuid> =
        sqlx::query_scalar("SELECT lead_id FROM conversations WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_uuid())
            .bind(scope.conversation)
            .fetch_optional(tx.conn())
            .await?
            .flatten();
    match lead {
        Some(id) => Ok(Some(leads::get(tx, id).await?)),
        None => Ok(None),
    }
}
