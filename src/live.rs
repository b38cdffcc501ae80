//! Live conversations across instances: while the tenant's team watches a
//! conversation (it waits for a person, or one has taken it over), what is
//! said in it reaches the other side's event stream, whichever instance the
//! visitor and the team member are connected to.
//!
//! Events travel through one Redis stream, `{prefix}:{live}:stream`, capped
//! at [`LIVE_STREAM_MAX_LEN`] entries. Every instance reads all of it (plain
//! XREAD, no consumer group: each instance needs every event) on a
//! connection of its own and fans it out to its local subscribers, which
//! keep what concerns them. The transcript in PostgreSQL stays the truth: a
//! widget resumes from a message position it read there, a dashboard from a
//! stream id still within the cap; one stream key keeps a Redis Cluster
//! deployment to one slot, and every instance reading every event is what a
//! capacity plan shards first (by tenant) when the team count grows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agentry_actors::ports::BusError;
use agentry_actors::{ConversationId, TenantId};
use fred::prelude::*;
use fred::types::streams::XReadResponse;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::bus::RedisBus;
use crate::db::chat::Message;
use crate::db::conversations::ConversationSummary;

/// Enough for a few minutes of every tenant's live conversations; a
/// dashboard away for longer reloads its lists instead of resuming.
pub const LIVE_STREAM_MAX_LEN: i64 = 10_000;
/// Entries one read hands on at most.
const READ_BATCH: u64 = 200;
/// How long one XREAD waits for news before asking again.
const READ_BLOCK: Duration = Duration::from_secs(2);
/// Events buffered per local subscriber before it lags (and resumes).
const FAN_OUT_CAPACITY: usize = 1024;
/// The single payload field of an entry.
const PAYLOAD_FIELD: &str = "event";

/// What happened in a live conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A message was stored.
    Message { message: Message },
    /// The conversation changed hands: escalated (waiting), taken over, handed back.
    Conversation { conversation: ConversationSummary },
}

/// An entry's payload. The ids are named apart from the event's own
/// fields, which are flattened in beside them.
#[derive(Serialize, Deserialize)]
struct Envelope {
    tenant_id: Uuid,
    conversation_id: Uuid,
    #[serde(flatten)]
    event: LiveEvent,
}

/// One event as read from the stream.
#[derive(Clone, Debug)]
pub struct LiveEntry {
    /// The stream entry id: a dashboard's resume point.
    pub id: String,
    pub tenant: TenantId,
    pub conversation: ConversationId,
    pub event: LiveEvent,
}

/// This instance's end of the live stream.
pub struct LiveHub {
    bus: RedisBus,
    key: String,
    fan_out: broadcast::Sender<Arc<LiveEntry>>,
    closing: watch::Sender<bool>,
}

impl LiveHub {
    /// `bus` gets a blocking connection of its own for the reader.
    pub fn new(bus: &RedisBus) -> Result<Self, BusError> {
        let bus = bus.with_own_blocking_connection()?;
        Ok(Self {
            key: bus.key("live", "stream"),
            bus,
            fan_out: broadcast::channel(FAN_OUT_CAPACITY).0,
            closing: watch::channel(false).0,
        })
    }

    /// Appends an event; every instance's subscribers see it.
    pub async fn publish(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        event: LiveEvent,
    ) -> Result<String, BusError> {
        let payload = serde_json::to_string(&Envelope {
            tenant_id: tenant.as_uuid(),
            conversation_id: conversation.as_uuid(),
            event,
        })
        .expect("live events serialize");
        let cap = ("MAXLEN", "~", LIVE_STREAM_MAX_LEN);
        self.bus
            .pool()
            .xadd(&self.key, false, cap, "*", vec![(PAYLOAD_FIELD, payload)])
            .await
            .map_err(unavailable)
    }

    /// [`Self::publish`] where a failure must not fail the caller (the
    /// message is stored; a watcher sees it on its next load): logged.
    pub async fn announce(&self, tenant: TenantId, conversation: ConversationId, event: LiveEvent) {
        if let Err(error) = self.publish(tenant, conversation, event).await {
            metrics::counter!("agentry_live_events_total", "outcome" => "publish_failed")
                .increment(1);
            tracing::warn!(%error, "a live event was not published");
        }
    }

    /// Events from now on, until the server stops.
    pub fn subscribe(&self) -> LiveSubscription {
        LiveSubscription {
            events: self.fan_out.subscribe(),
            closing: self.closing.subscribe(),
        }
    }

    /// The events after `after` (a stream id) that concern `tenant`, oldest
    /// first, at most [`LIVE_STREAM_MAX_LEN`]: a dashboard's resume.
    pub async fn since(&self, after: &str, tenant: TenantId) -> Result<Vec<LiveEntry>, BusError> {
        let start = format!("({after}");
        let entries: Vec<(String, HashMap<String, String>)> = self
            .bus
            .pool()
            .xrange_values(&self.key, start, "+", Some(LIVE_STREAM_MAX_LEN as u64))
            .await
            .map_err(unavailable)?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| parse(id, fields))
            .filter(|entry| entry.tenant == tenant)
            .collect())
    }

    /// Ends every open stream of this instance (graceful shutdown: the HTTP
    /// server waits for open responses).
    pub fn close(&self) {
        let _ = self.closing.send(true);
    }

    /// Reads the stream and fans it out, until `stop`. Starts after the
    /// entry that is last now; after an outage it goes on from the last
    /// entry it read, so what was published meanwhile is not skipped.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut last: Option<String> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let read = async {
                let after = match &last {
                    Some(id) => id.clone(),
                    None => self.last_id().await?,
                };
                let entries = self.read_after(&after).await?;
                Ok::<_, BusError>((after, entries))
            };
            let result = tokio::select! {
                result = read => result,
                _ = until_set(&mut stop) => break,
            };
            match result {
                Ok((after, entries)) => {
                    last = Some(entries.last().map_or(after, |entry| entry.id.clone()));
                    for entry in entries {
                        metrics::counter!("agentry_live_events_total", "outcome" => "read")
                            .increment(1);
                        // No subscriber here: nothing to hand on.
                        let _ = self.fan_out.send(Arc::new(entry));
                    }
                }
                Err(error) => {
                    metrics::counter!("agentry_live_events_total", "outcome" => "read_failed")
                        .increment(1);
                    tracing::warn!(%error, "reading the live stream failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = until_set(&mut stop) => break,
                    }
                }
            }
        }
        self.bus.quit_blocking().await;
    }

    /// The id of the stream's newest entry (`0-0` while it is empty).
    async fn last_id(&self) -> Result<String, BusError> {
        let newest: Vec<(String, HashMap<String, String>)> = self
            .bus
            .pool()
            .xrevrange_values(&self.key, "+", "-", Some(1))
            .await
            .map_err(unavailable)?;
        Ok(newest
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id))
    }

    async fn read_after(&self, after: &str) -> Result<Vec<LiveEntry>, BusError> {
        let options = Options {
            timeout: Some(READ_BLOCK + Duration::from_secs(3)),
            ..Default::default()
        };
        let raw: Value = self
            .bus
            .blocking_pool()
            .next()
            .with_options(&options)
            .xread(
                Some(READ_BATCH),
                Some(READ_BLOCK.as_millis() as u64),
                &self.key,
                after,
            )
            .await
            .map_err(unavailable)?;
        // A read that times out with nothing new answers nil.
        if raw.is_null() {
            return Ok(Vec::new());
        }
        let response: XReadResponse<String, String, String, String> =
            raw.into_xread_response().map_err(unavailable)?;
        Ok(response
            .into_values()
            .flatten()
            .filter_map(|(id, fields)| parse(id, fields))
            .collect())
    }
}

/// Resolves once `signal` turns true. (Unlike `wait_for`, it holds no
/// borrow of the value, so a task awaiting it in `select!` stays `Send`.)
pub async fn until_set(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|set| *set).await;
}

/// One subscriber's events, and the server's signal to stop.
pub struct LiveSubscription {
    pub events: broadcast::Receiver<Arc<LiveEntry>>,
    pub closing: watch::Receiver<bool>,
}

/// An entry this version cannot read is skipped (and logged), not fatal:
/// during a rolling upgrade instances of two versions share the stream.
fn parse(id: String, mut fields: HashMap<String, String>) -> Option<LiveEntry> {
    let payload = fields.remove(PAYLOAD_FIELD)?;
    match serde_json::from_str::<Envelope>(&payload) {
        Ok(envelope) => Some(LiveEntry {
            id,
            tenant: TenantId::from_uuid(envelope.tenant_id),
            conversation: ConversationId::from_uuid(envelope.conversation_id),
            event: envelope.event,
        }),
        Err(error) => {
            tracing::warn!(%error, %id, "skipping a live event this version cannot read");
            None
        }
    }
}

fn unavailable(error: fred::error::Error) -> BusError {
    BusError::Unavailable(error.to_string())
}

/// A Redis stream id (`ms-seq`, each a u64 in digits) as a pair that
/// orders as the stream does; `None` for anything else, so it also tells
/// whether a `Last-Event-ID` is one.
pub fn stream_order(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    // `parse` alone would take a leading `+`.
    let number = |part: &str| match part.bytes().all(|b| b.is_ascii_digit()) {
        true => part.parse().ok(),
        false => None,
    };
    Some((number(ms)?, number(seq)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn stream_ids_are_told_from_anything_else() {
        assert_eq!(
            stream_order("1733100000000-0"),
            Some((1_733_100_000_000, 0))
        );
        assert_eq!(stream_order("0-0"), Some((0, 0)));
        let too_long = format!("{}-0", "9".repeat(21));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "12",
            "1 -2",
            too_long.as_str(),
        ] {
            assert_eq!(stream_order(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(stream_order("10-2") > stream_order("10-1"));
        assert!(stream_order("11-0") > stream_order("10-99"));
        assert!(
            stream_order("9-0") < stream_order("10-0"),
            "numeric, not textual"
        );
        assert_eq!(stream_order("+1-0"), None, "digits only");
    }

    #[test]
    fn a_conversation_event_round_trips_beside_the_ids() {
        let summary = ConversationSummary {
            id: Uuid::now_v7(),
            agent_id: Uuid::now_v7(),
            channel: "widget".into(),
            status: "waiting_for_human".into(),
            lead_id: None,
            started_at: Utc::now(),
            escalated_at: Some(Utc::now()),
            escalation_reason: Some("a person, please".into()),
            state: "waiting".into(),
            taken_over_by: None,
        };
        let event = LiveEvent::Conversation {
            conversation: summary,
        };
        let text = serde_json::to_string(&Envelope {
            tenant_id: Uuid::now_v7(),
            conversation_id: Uuid::now_v7(),
            event: event.clone(),
        })
        .unwrap();
        let entry = parse(
            "1-0".into(),
            HashMap::from([(PAYLOAD_FIELD.to_owned(), text)]),
        )
        .unwrap();
        assert_eq!(entry.event, event);
    }

    #[test]
    fn an_envelope_round_trips_with_its_kind() {
        let message = Message {
            id: Uuid::now_v7(),
            seq: 3,
            role: agentry_actors::ports::MessageRole::Assistant,
            content: "Hello".into(),
            created_at: Utc::now(),
            human: true,
        };
        let envelope = Envelope {
            tenant_id: Uuid::now_v7(),
            conversation_id: Uuid::now_v7(),
            event: LiveEvent::Message {
                message: message.clone(),
            },
        };
        let text = serde_json::to_string(&envelope).unwrap();
        assert!(text.contains(r#""kind":"message""#), "{text}");
        let entry = parse(
            "1-0".into(),
            HashMap::from([(PAYLOAD_FIELD.to_owned(), text)]),
        )
        .unwrap();
        assert_eq!(entry.event, LiveEvent::Message { message });
        assert!(parse(
            "2-0".into(),
            HashMap::from([(PAYLOAD_FIELD.to_owned(), "{}".into())])
        )
        .is_none());
    }
}
