//! The ports this crate's stages need from the outside world.
//!
//! Implemented in the service crate (Redis, PostgreSQL, HTTP); stages and their
//! unit tests depend only on these traits.

use std::time::Duration;

use async_trait::async_trait;

/// A durable stream of work shared by every instance (Redis streams underneath).
///
/// Delivery is at least once: an entry read by a consumer stays pending until it
/// is acknowledged, and entries left pending by a dead consumer can be reclaimed
/// by another after `min_idle`.
#[async_trait]
pub trait StreamBus: Send + Sync + 'static {
    /// Appends `payload` to `stream`, trimming the stream to roughly its configured
    /// maximum length. Returns the entry id.
    async fn publish(&self, stream: StreamName, payload: &str) -> Result<String, BusError>;

    /// Creates the consumer group (and the stream) if missing; idempotent.
    async fn ensure_group(&self, stream: StreamName, group: &str) -> Result<(), BusError>;

    /// Reads up to `count` new entries for `consumer`, waiting at most `block`.
    async fn read_group(
        &self,
        stream: StreamName,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, BusError>;

    /// Acknowledges processed entries; returns how many were pending.
    async fn ack(&self, stream: StreamName, group: &str, ids: &[String]) -> Result<u64, BusError>;

    /// Takes over up to `count` entries pending longer than `min_idle` for `consumer`.
    async fn reclaim(
        &self,
        stream: StreamName,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BusError>;

    /// Number of entries in the stream (for backlog gauges).
    async fn len(&self, stream: StreamName) -> Result<u64, BusError>;
}

/// A logical stream name; the bus derives its keys (prefix, hash tag) from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamName(&'static str);

impl StreamName {
    /// `name` becomes the Redis Cluster hash tag, so it must be short and stable.
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    pub const fn as_str(&self) -> &'static str {
        self.0
    }
}

/// One entry read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: String,
    pub payload: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("stream backend unavailable: {0}")]
    Unavailable(String),
    #[error("malformed stream entry {id}: {reason}")]
    Malformed { id: String, reason: String },
}
