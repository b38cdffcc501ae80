//! Redis: the connection pool, key naming, and the stream primitives behind
//! [`StreamBus`].
//!
//! Keys are `{prefix}:{tag}:name`: the prefix separates deployments and test
//! runs sharing one Redis, and the `{tag}` hash tag keeps a stream and its
//! companion keys (delayed set, dedup) in one Redis Cluster slot, so atomic
//! scripts over them keep working when `REDIS_URL` points at a cluster.

use std::collections::HashMap;
use std::time::Duration;

use agentry_actors::ports::{BusError, StreamBus, StreamEntry, StreamName};
use async_trait::async_trait;
use fred::prelude::*;
use fred::types::streams::XReadResponse;
use fred::types::{ClusterHash, CustomCommand};

use crate::configuration::RedisSettings;

/// The field every stream entry carries its JSON payload in.
const PAYLOAD_FIELD: &str = "payload";
/// Commands that do not block fail after this, so a dead Redis turns into a
/// clear error instead of a hung request.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct RedisBus {
    pool: Pool,
    /// Blocking reads get their own connections: a client waiting in
    /// XREADGROUP BLOCK would otherwise hold up every command queued behind it.
    blocking: Pool,
    config: Config,
    prefix: String,
    stream_max_len: u64,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Builds the pools and starts connecting in the background: the server
    /// starts (and reports not-ready) while Redis is down, and reconnects after.
    pub fn connect(settings: &RedisSettings) -> Result<Self, BusError> {
        let url = settings.url.expose();
        let config = if url.starts_with("redis-cluster://") {
            Config::from_url_clustered(url)
        } else {
            Config::from_url(url)
        }
        .map_err(unavailable)?;
        Ok(Self {
            pool: build_pool(&config, settings.pool_size.max(1), COMMAND_TIMEOUT)?,
            // Blocking commands set their own timeout per call.
            blocking: build_pool(&config, settings.pool_size.max(1), Duration::ZERO)?,
            config,
            prefix: settings.prefix.clone(),
            stream_max_len: settings.stream_max_len,
        })
    }

    /// The same bus with a blocking connection of its own, for a consumer
    /// that blocks in XREADGROUP all the time: sharing the blocking pool,
    /// its reads and another consumer's would queue behind each other on
    /// one connection (seen as 2 s stalls between webhook batches).
    pub fn with_own_blocking_connection(&self) -> Result<Self, BusError> {
        Ok(Self {
            blocking: build_pool(&self.config, 1, Duration::ZERO)?,
            ..self.clone()
        })
    }

    /// `{prefix}:{tag}:name`.
    pub fn key(&self, tag: &str, name: &str) -> String {
        format!("{}:{{{tag}}}:{name}", self.prefix)
    }

    pub fn stream_key(&self, stream: StreamName) -> String {
        self.key(stream.as_str(), "stream")
    }

    /// The pool, for adapters (rate limits, revocation lists) that build on the same keys.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The connections that wait in blocking reads.
    pub fn blocking_pool(&self) -> &Pool {
        &self.blocking
    }

    pub async fn ping(&self) -> Result<(), BusError> {
        let _: String = self.pool.ping(None).await.map_err(unavailable)?;
        Ok(())
    }

    /// Closes the blocking connections only (those of [`Self::with_own_blocking_connection`]).
    pub async fn quit_blocking(&self) {
        let _ = self.blocking.quit().await;
    }

    pub async fn quit(&self) {
        let _ = self.pool.quit().await;
        let _ = self.blocking.quit().await;
    }
}

/// A pool that connects in the background and reconnects with backoff.
fn build_pool(config: &Config, size: usize, timeout: Duration) -> Result<Pool, BusError> {
    let pool = Builder::from_config(config.clone())
        .with_connection_config(|connection| {
            connection.connection_timeout = Duration::from_secs(2);
            connection.internal_command_timeout = Duration::from_secs(2);
        })
        .with_performance_config(|performance| performance.default_command_timeout = timeout)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build_pool(size)
        .map_err(unavailable)?;
    pool.connect();
    Ok(pool)
}

/// EVAL of `script` over `keys` (which must share a hash slot) with `args`,
/// sent like any other command. fred's own `eval` looks the keys' node up in
/// a cluster client's slot map when it is called, and fails ("Missing cluster
/// routing state") until the client has connected and read that map, where
/// every other command waits for the connection: a rate limit checked in an
/// instance's first moments failed closed. Routed by its first key's slot,
/// this one waits like the others (within the command timeout).
pub async fn eval<R: FromValue>(
    client: &Client,
    script: &str,
    keys: Vec<Key>,
    args: Vec<Value>,
) -> Result<R, fred::error::Error> {
    let route = keys.first().map_or(ClusterHash::Random, |key| {
        ClusterHash::Custom(fred::util::redis_keyslot(key.as_bytes()))
    });
    let mut values = Vec::with_capacity(2 + keys.len() + args.len());
    values.push(Value::from(script));
    values.push(Value::from(keys.len() as i64));
    values.extend(keys.into_iter().map(Value::from));
    values.extend(args);
    client
        .custom(CustomCommand::new_static("EVAL", route, false), values)
        .await
}

fn unavailable(error: fred::error::Error) -> BusError {
    BusError::Unavailable(error.to_string())
}

fn into_entry(id: String, mut fields: HashMap<String, String>) -> Result<StreamEntry, BusError> {
    match fields.remove(PAYLOAD_FIELD) {
        Some(payload) => Ok(StreamEntry { id, payload }),
        None => Err(BusError::Malformed {
            id,
            reason: format!("no {PAYLOAD_FIELD} field"),
        }),
    }
}

#[async_trait]
impl StreamBus for RedisBus {
    async fn publish(&self, stream: StreamName, payload: &str) -> Result<String, BusError> {
        let cap = ("MAXLEN", "~", self.stream_max_len as i64);
        self.pool
            .xadd(
                self.stream_key(stream),
                false,
                cap,
                "*",
                vec![(PAYLOAD_FIELD, payload)],
            )
            .await
            .map_err(unavailable)
    }

    async fn ensure_group(&self, stream: StreamName, group: &str) -> Result<(), BusError> {
        let created: Result<String, _> = self
            .pool
            .xgroup_create(self.stream_key(stream), group, "0", true)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(error) if error.details().starts_with("BUSYGROUP") => Ok(()),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn read_group(
        &self,
        stream: StreamName,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, BusError> {
        let key = self.stream_key(stream);
        let options = Options {
            timeout: Some(block + COMMAND_TIMEOUT),
            ..Default::default()
        };
        let raw: Value = self
            .blocking
            .next()
            .with_options(&options)
            .xreadgroup(
                group,
                consumer,
                Some(count as u64),
                Some(block.as_millis() as u64),
                false,
                key,
                ">",
            )
            .await
            .map_err(unavailable)?;
        // A read that times out with nothing new answers nil, not an empty map.
        if raw.is_null() {
            return Ok(Vec::new());
        }
        let response: XReadResponse<String, String, String, String> =
            raw.into_xread_response().map_err(unavailable)?;
        response
            .into_values()
            .flatten()
            .map(|(id, fields)| into_entry(id, fields))
            .collect()
    }

    async fn ack(&self, stream: StreamName, group: &str, ids: &[String]) -> Result<u64, BusError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.pool
            .xack(self.stream_key(stream), group, ids.to_vec())
            .await
            .map_err(unavailable)
    }

    async fn reclaim(
        &self,
        stream: StreamName,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, BusError> {
        let (_next, entries): (String, Vec<(String, HashMap<String, String>)>) = self
            .pool
            .xautoclaim_values(
                self.stream_key(stream),
                group,
                consumer,
                min_idle.as_millis() as u64,
                "0-0",
                Some(count as u64),
                false,
            )
            .await
            .map_err(unavailable)?;
        entries
            .into_iter()
            .map(|(id, fields)| into_entry(id, fields))
            .collect()
    }

    async fn len(&self, stream: StreamName) -> Result<u64, BusError> {
        self.pool
            .xlen(self.stream_key(stream))
            .await
            .map_err(unavailable)
    }
}

impl RedisBus {
    /// Entries a consumer group has yet to finish: never delivered (`lag`)
    /// plus delivered but unacknowledged (`pending`). For backlog gauges.
    pub async fn group_backlog(&self, stream: StreamName, group: &str) -> Result<u64, BusError> {
        Ok(self
            .group_info(stream, group)
            .await?
            .map_or(0, |info| info.backlog))
    }

    async fn group_info(
        &self,
        stream: StreamName,
        group: &str,
    ) -> Result<Option<GroupInfo>, BusError> {
        let groups: Vec<HashMap<String, Value>> = self
            .pool
            .xinfo_groups(self.stream_key(stream))
            .await
            .map_err(unavailable)?;
        let Some(info) = groups
            .iter()
            .find(|info| info.get("name").and_then(|v| v.as_string()).as_deref() == Some(group))
        else {
            return Ok(None);
        };
        let number = |field: &str| info.get(field).and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(Some(GroupInfo {
            backlog: number("lag") + number("pending"),
            last_delivered: info.get("last-delivered-id").and_then(|v| v.as_string()),
        }))
    }

    /// `group`'s backlog on `stream` and the time (Unix ms) of its oldest
    /// entry: the oldest one delivered but unacknowledged, else the first
    /// one not yet delivered.
    pub async fn group_depth(
        &self,
        stream: StreamName,
        group: &str,
    ) -> Result<(u64, Option<i64>), BusError> {
        let Some(info) = self.group_info(stream, group).await? else {
            return Ok((0, None));
        };
        if info.backlog == 0 {
            return Ok((0, None));
        }
        let (_, oldest_pending) = self.pending_summary(stream, group).await?;
        if let Some(ms) = oldest_pending.as_deref().and_then(entry_time_ms) {
            return Ok((info.backlog, Some(ms)));
        }
        let after = info
            .last_delivered
            .map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let first: Value = self
            .pool
            .xrange(self.stream_key(stream), after, "+", Some(1))
            .await
            .map_err(unavailable)?;
        let oldest = match first {
            Value::Array(entries) => entries.into_iter().next().and_then(|entry| match entry {
                Value::Array(parts) => parts.first().and_then(|id| id.as_string()),
                _ => None,
            }),
            _ => None,
        };
        Ok((info.backlog, oldest.as_deref().and_then(entry_time_ms)))
    }
}

struct GroupInfo {
    /// Entries not yet delivered plus delivered but unacknowledged.
    backlog: u64,
    last_delivered: Option<String>,
}

/// Moves every entry of a delayed set due by `ARGV[1]` (ms) onto its stream,
/// at most `ARGV[2]` of them, in one script: an entry is never in neither
/// place nor in both. KEYS: the delayed set, the stream (one hash tag).
const MOVE_DUE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, payload in ipairs(due) do
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'payload', payload)
    redis.call('ZREM', KEYS[1], payload)
end
return #due
"#;

impl RedisBus {
    /// The sorted set of `stream`'s delayed entries, scored by due time in ms.
    pub fn delayed_key(&self, stream: StreamName) -> String {
        self.key(stream.as_str(), "delayed")
    }

    /// Puts `payload` on `stream` at `due_ms` (Unix milliseconds). Payloads
    /// are set members: each must be unique (it carries its delivery's id).
    pub async fn publish_at(
        &self,
        stream: StreamName,
        payload: &str,
        due_ms: i64,
    ) -> Result<(), BusError> {
        let _: i64 = self
            .pool
            .zadd(
                self.delayed_key(stream),
                None,
                None,
                false,
                false,
                (due_ms as f64, payload),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Moves the entries due by `now_ms` onto the stream; how many it moved.
    pub async fn move_due(
        &self,
        stream: StreamName,
        now_ms: i64,
        limit: usize,
    ) -> Result<u64, BusError> {
        eval(
            self.pool.next(),
            MOVE_DUE,
            vec![
                self.delayed_key(stream).into(),
                self.stream_key(stream).into(),
            ],
            vec![
                now_ms.into(),
                (limit as i64).into(),
                (self.stream_max_len as i64).into(),
            ],
        )
        .await
        .map_err(unavailable)
    }

    /// When the next delayed entry is due (Unix ms), so a mover can sleep
    /// until then instead of polling.
    pub async fn next_due(&self, stream: StreamName) -> Result<Option<i64>, BusError> {
        let first: Vec<(String, f64)> = self
            .pool
            .zrange(self.delayed_key(stream), 0, 0, None, false, None, true)
            .await
            .map_err(unavailable)?;
        Ok(first.first().map(|(_, score)| *score as i64))
    }

    /// How many entries wait in the delayed set.
    pub async fn delayed_len(&self, stream: StreamName) -> Result<u64, BusError> {
        self.pool
            .zcard(self.delayed_key(stream))
            .await
            .map_err(unavailable)
    }
}

impl RedisBus {
    /// Publishes `payloads` to `stream` in order, in one round trip (a
    /// pipeline on one connection); their entry ids.
    pub async fn publish_many(
        &self,
        stream: StreamName,
        payloads: &[String],
    ) -> Result<Vec<String>, BusError> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.stream_key(stream);
        let cap = ("MAXLEN", "~", self.stream_max_len as i64);
        let pipeline = self.pool.next().pipeline();
        for payload in payloads {
            let _: () = pipeline
                .xadd(
                    key.clone(),
                    false,
                    cap,
                    "*",
                    vec![(PAYLOAD_FIELD, payload.as_str())],
                )
                .await
                .map_err(unavailable)?;
        }
        pipeline.all().await.map_err(unavailable)
    }

    /// Acknowledges finished entries and deletes them. Each stream has one
    /// consumer group, so a finished entry has no reader left; and a group
    /// recreated from the start after `NOGROUP` then finds only unfinished work.
    pub async fn ack_and_delete(
        &self,
        stream: StreamName,
        group: &str,
        ids: &[String],
    ) -> Result<(), BusError> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = self.stream_key(stream);
        // One round trip for both; XACK first, so a failed XDEL leaves a
        // finished entry that a recreated group would only skip as a duplicate.
        let pipeline = self.pool.next().pipeline();
        let _: () = pipeline
            .xack(key.clone(), group, ids.to_vec())
            .await
            .map_err(unavailable)?;
        let _: () = pipeline
            .xdel(key, ids.to_vec())
            .await
            .map_err(unavailable)?;
        let _: Vec<u64> = pipeline.all().await.map_err(unavailable)?;
        Ok(())
    }

    /// How many entries `group` holds delivered but unacknowledged, and the
    /// id of the oldest (its first part is the entry's creation time in ms).
    pub async fn pending_summary(
        &self,
        stream: StreamName,
        group: &str,
    ) -> Result<(u64, Option<String>), BusError> {
        let summary: Result<Value, _> =
            self.pool.xpending(self.stream_key(stream), group, ()).await;
        let summary = match summary {
            Ok(summary) => summary,
            // No stream or no group yet: nothing is pending.
            Err(error) if error.details().starts_with("NOGROUP") => return Ok((0, None)),
            Err(error) => return Err(unavailable(error)),
        };
        let Value::Array(parts) = summary else {
            return Ok((0, None));
        };
        let count = parts.first().and_then(|v| v.as_u64()).unwrap_or(0);
        let oldest = parts.get(1).and_then(|v| v.as_string());
        Ok((count, oldest))
    }

    /// The sentinel that tells whether Redis still holds what was written to
    /// `stream`'s keys: set once, never expiring; gone after FLUSHALL or a
    /// restart without persistence.
    pub fn epoch_key(&self, stream: StreamName) -> String {
        self.key(stream.as_str(), "epoch")
    }

    /// Sets the epoch sentinel if it is missing; true when this call set it,
    /// i.e. this caller must rebuild what Redis lost (SET NX: one winner).
    pub async fn claim_epoch(&self, stream: StreamName) -> Result<bool, BusError> {
        let set: Value = self
            .pool
            .set(
                self.epoch_key(stream),
                uuid::Uuid::new_v4().to_string(),
                None,
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(!set.is_null())
    }
}

/// Unix time in milliseconds of a stream entry id (`<ms>-<seq>`).
pub fn entry_time_ms(id: &str) -> Option<i64> {
    id.split('-').next()?.parse().ok()
}
