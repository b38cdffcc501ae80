//! Cluster-wide rate limits: GCRA (the generic cell rate algorithm) decided
//! in Redis by one atomic script, so every instance enforces one limit, not
//! one limit each.
//!
//! A limit of `n` per minute is one request every `60 s / n` with a burst of
//! `n`: a key's state is its theoretical arrival time (TAT); a request is
//! admitted when, after adding one interval, the TAT is at most a minute
//! ahead of now. The script reads Redis's own clock, so instances with
//! skewed clocks still agree. The math is [`step`] and [`Decision::of`],
//! plain functions the script mirrors.
//!
//! Decisions go through [`RateLimiter`]: keys hash to one of N
//! `RateLimitShard` actors, each sending all the decisions that queued up
//! while its previous batch was in flight as one pipeline, so concurrent
//! requests share round trips instead of paying one each in series. When
//! Redis cannot be reached a shard decides with the same math on its own
//! clock (one instance's view: a degraded limit, logged and counted), or
//! refuses outright for tiers that fail closed. An operator can raise or
//! lower a tier for one tenant ([`overrides`]).

pub mod overrides;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use agentry_actors::TenantId;
use fred::prelude::*;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::bus::RedisBus;
use crate::configuration::RateLimitSettings;
pub use overrides::TierOverrides;

const MICROS_PER_MINUTE: i64 = 60_000_000;
/// The highest limit a tier may have: one request a microsecond.
pub const MAX_PER_MINUTE: u32 = 60_000_000;

/// A limit: `per_minute` requests a minute, in bursts of up to as many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub per_minute: u32,
}

impl Limit {
    /// The time one request uses up, in microseconds.
    pub fn interval(self) -> i64 {
        MICROS_PER_MINUTE / i64::from(self.per_minute.max(1))
    }

    /// How far ahead of now the TAT may run: the whole burst.
    pub fn window(self) -> i64 {
        self.interval() * i64::from(self.per_minute.max(1))
    }
}

/// One GCRA step: whether a request at `now` (µs) is admitted given the
/// key's stored TAT, and the TAT after it.
pub fn step(stored_tat: Option<i64>, now: i64, limit: Limit) -> (bool, i64) {
    let tat = stored_tat.unwrap_or(now).max(now);
    let next = tat + limit.interval();
    if next - now > limit.window() {
        (false, tat)
    } else {
        (true, next)
    }
}

/// A decision and what the response headers say about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests still admitted right now.
    pub remaining: u32,
    /// Until the key is back to a full burst (`X-RateLimit-Reset`).
    pub reset_after: Duration,
    /// Until the next request would be admitted, when this one was not.
    pub retry_after: Option<Duration>,
    /// Refused without a count: the tier fails closed and Redis is away.
    pub unchecked: bool,
}

impl Decision {
    /// The headers' figures from a step's outcome: `tat` is the TAT after it.
    pub fn of(allowed: bool, tat: i64, now: i64, limit: Limit) -> Self {
        let ahead = (tat - now).max(0);
        let remaining = (limit.window() - ahead).max(0) / limit.interval();
        let retry_after = (!allowed).then(|| {
            let admitted_at = tat + limit.interval() - limit.window();
            micros((admitted_at - now).max(1))
        });
        Self {
            allowed,
            limit: limit.per_minute,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_after: micros(ahead),
            retry_after,
            unchecked: false,
        }
    }

    /// Refused without asking anyone: a tier failing closed while Redis is away.
    fn refused_unchecked(limit: Limit) -> Self {
        Self {
            allowed: false,
            limit: limit.per_minute,
            remaining: 0,
            reset_after: Duration::from_secs(60),
            retry_after: Some(Duration::from_secs(5)),
            unchecked: true,
        }
    }
}

fn micros(value: i64) -> Duration {
    Duration::from_micros(u64::try_from(value).unwrap_or(0))
}

/// The script [`step`] mirrors, atomic in Redis. KEYS[1]: the key's TAT;
/// ARGV: interval and window in µs. Returns {admitted, TAT after, now}.
/// Integers are written with %d: Lua's tostring would round a µs
/// timestamp to 14 digits.
pub const GCRA_SCRIPT: &str = r#"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now > window then
    return {0, string.format('%d', tat), string.format('%d', now)}
end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.max(1, math.ceil((next_tat - now) / 1000)))
return {1, string.format('%d', next_tat), string.format('%d', now)}
"#;

/// The tiers, each its own limit per minute in `[rate_limits]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    Auth,
    Admin,
    Chat,
    Upload,
    Standard,
    ProviderWebhooks,
    WidgetSessions,
    WidgetMessages,
    ApiTokens,
    /// Exports and erasures of one person's data, per tenant.
    Privacy,
}

impl Tier {
    pub const ALL: [Self; 10] = [
        Self::Auth,
        Self::Admin,
        Self::Chat,
        Self::Upload,
        Self::Standard,
        Self::ProviderWebhooks,
        Self::WidgetSessions,
        Self::WidgetMessages,
        Self::ApiTokens,
        Self::Privacy,
    ];

    /// The tier's name in config, keys and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Admin => "admin",
            Self::Chat => "chat",
            Self::Upload => "upload",
            Self::Standard => "standard",
            Self::ProviderWebhooks => "provider_webhooks",
            Self::WidgetSessions => "widget_sessions",
            Self::WidgetMessages => "widget_messages",
            Self::ApiTokens => "api_tokens",
            Self::Privacy => "privacy",
        }
    }

    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tier| tier.label() == label)
    }

    /// Whether an operator can set the tier per tenant: it counts requests
    /// within one tenant (auth and admin count per client IP before any
    /// tenant is known).
    pub fn per_tenant(self) -> bool {
        !matches!(self, Self::Auth | Self::Admin)
    }

    pub fn limit(self, settings: &RateLimitSettings) -> Limit {
        let per_minute = match self {
            Self::Auth => settings.auth,
            Self::Admin => settings.admin,
            Self::Chat => settings.chat,
            Self::Upload => settings.upload,
            Self::Standard => settings.standard,
            Self::ProviderWebhooks => settings.provider_webhooks,
            Self::WidgetSessions => settings.widget_sessions,
            Self::WidgetMessages => settings.widget_messages,
            Self::ApiTokens => settings.api_tokens,
            Self::Privacy => settings.privacy,
        };
        Limit { per_minute }
    }

    pub fn when_unavailable(self, settings: &RateLimitSettings) -> WhenUnavailable {
        match settings.fail_closed.iter().any(|tier| tier == self.label()) {
            true => WhenUnavailable::FailClosed,
            false => WhenUnavailable::Local,
        }
    }

    /// Refuses settings with a limit out of range, too many shards, or an
    /// unknown tier name.
    pub fn check_settings(settings: &RateLimitSettings) -> Result<(), String> {
        if let Some(tier) = Self::ALL
            .iter()
            .find(|t| !(1..=MAX_PER_MINUTE).contains(&t.limit(settings).per_minute))
        {
            // The state is kept in µs: one request a µs is the finest rate.
            return Err(format!(
                "rate_limits.{} must be 1 to {MAX_PER_MINUTE} per minute",
                tier.label()
            ));
        }
        if !(1..=64).contains(&settings.shards) {
            return Err("rate_limits.shards must be 1 to 64".into());
        }
        for name in &settings.fail_closed {
            if !Self::ALL.iter().any(|t| t.label() == name) {
                return Err(format!("rate_limits.fail_closed: unknown tier {name:?}"));
            }
        }
        Ok(())
    }
}

/// What a tier does when Redis cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenUnavailable {
    /// Refuse (login: a flood must not get through while Redis is away).
    FailClosed,
    /// Decide on this instance alone.
    Local,
}

/// One decision to make: the tier (a metric label), the Redis key, the limit.
pub struct Ask {
    pub tier: &'static str,
    pub key: String,
    pub limit: Limit,
    pub when_unavailable: WhenUnavailable,
}

enum ShardMsg {
    Decide(Ask, oneshot::Sender<Decision>),
    /// Sends what queued up since the last batch.
    Flush,
}

struct RateLimitShard;

struct ShardState {
    bus: RedisBus,
    pending: Vec<(Ask, oneshot::Sender<Decision>)>,
    /// TATs of the keys decided here while Redis was unavailable.
    local: HashMap<String, i64>,
    redis_away: bool,
    /// While Redis is away it is asked again at most this often; in between
    /// decisions are local at once instead of each waiting for a timeout.
    retry_redis_at: Option<std::time::Instant>,
}

/// How long a shard decides locally after Redis failed before asking it again.
const REDIS_RETRY: Duration = Duration::from_secs(1);

impl Actor for RateLimitShard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = RedisBus;

    async fn pre_start(
        &self,
        _myself: ActorRef<ShardMsg>,
        bus: RedisBus,
    ) -> Result<ShardState, ActorProcessingErr> {
        Ok(ShardState {
            bus,
            pending: Vec::new(),
            local: HashMap::new(),
            redis_away: false,
            retry_redis_at: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ShardMsg>,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        if state.redis_away {
            metrics::gauge!("agentry_rate_limit_shards_local").decrement(1.0);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        message: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Decide(ask, reply) => {
                state.pending.push((ask, reply));
                // The flush queues behind every decision already waiting:
                // they all go out in one pipeline.
                if state.pending.len() == 1 {
                    myself.send_message(ShardMsg::Flush)?;
                }
            }
            ShardMsg::Flush => flush(state).await,
        }
        Ok(())
    }
}

async fn flush(state: &mut ShardState) {
    let batch = std::mem::take(&mut state.pending);
    if batch.is_empty() {
        return;
    }
    metrics::histogram!("agentry_rate_limit_batch_size").record(batch.len() as f64);
    let ask_redis = state
        .retry_redis_at
        .is_none_or(|at| std::time::Instant::now() >= at);
    let decided = match ask_redis {
        true => decide_in_redis(&state.bus, &batch).await,
        false => Err(Error::new(
            ErrorKind::IO,
            "Redis was unavailable a moment ago",
        )),
    };
    match decided {
        Ok(decisions) => {
            if state.redis_away {
                state.redis_away = false;
                metrics::gauge!("agentry_rate_limit_shards_local").decrement(1.0);
                state.retry_redis_at = None;
                state.local.clear();
                tracing::info!("rate limits: Redis is back; deciding cluster-wide again");
            }
            for ((_, reply), decision) in batch.into_iter().zip(decisions) {
                let _ = reply.send(decision);
            }
        }
        Err(error) => {
            if ask_redis {
                state.retry_redis_at = Some(std::time::Instant::now() + REDIS_RETRY);
            }
            if !state.redis_away {
                state.redis_away = true;
                metrics::gauge!("agentry_rate_limit_shards_local").increment(1.0);
                tracing::warn!(%error, "rate limits: Redis unavailable; auth fails closed, other tiers limit per instance");
            }
            let now = chrono::Utc::now().timestamp_micros();
            for (ask, reply) in batch {
                metrics::counter!("agentry_rate_limit_unavailable_total", "tier" => ask.tier)
                    .increment(1);
                let decision = match ask.when_unavailable {
                    WhenUnavailable::FailClosed => Decision::refused_unchecked(ask.limit),
                    WhenUnavailable::Local => {
                        let stored = state.local.get(&ask.key).copied();
                        let (allowed, tat) = step(stored, now, ask.limit);
                        state.local.insert(ask.key, tat);
                        record_decision(ask.tier, allowed, "local");
                        Decision::of(allowed, tat, now, ask.limit)
                    }
                };
                let _ = reply.send(decision);
            }
        }
    }
}

/// `agentry_rate_limit_decisions_total{tier,outcome,source}`: `source` tells
/// cluster-wide decisions (`redis`) from an instance's own while Redis is away.
fn record_decision(tier: &'static str, allowed: bool, source: &'static str) {
    let outcome = if allowed { "allowed" } else { "limited" };
    metrics::counter!(
        "agentry_rate_limit_decisions_total",
        "tier" => tier,
        "outcome" => outcome,
        "source" => source,
    )
    .increment(1);
}

/// The whole batch on one connection at once: fred writes every command
/// before reading the first reply (auto-pipelining), so a batch costs one
/// round trip, not one per decision.
async fn decide_in_redis(
    bus: &RedisBus,
    batch: &[(Ask, oneshot::Sender<Decision>)],
) -> Result<Vec<Decision>, Error> {
    let client = bus.pool().next();
    let replies = futures_util::future::join_all(batch.iter().map(|(ask, _)| {
        crate::bus::eval::<Vec<i64>>(
            client,
            GCRA_SCRIPT,
            vec![ask.key.as_str().into()],
            vec![ask.limit.interval().into(), ask.limit.window().into()],
        )
    }))
    .await;
    batch
        .iter()
        .zip(replies)
        .map(|((ask, _), reply)| match reply?.as_slice() {
            [admitted, tat, now] => {
                record_decision(ask.tier, *admitted == 1, "redis");
                Ok(Decision::of(*admitted == 1, *tat, *now, ask.limit))
            }
            other => Err(Error::new(
                ErrorKind::Parse,
                format!("rate limit script answered {other:?}"),
            )),
        })
        .collect()
}

/// The handle the HTTP edge decides through: keys hash to shards.
#[derive(Clone)]
pub struct RateLimiter {
    shards: Arc<Vec<ActorRef<ShardMsg>>>,
    bus: RedisBus,
    settings: Arc<RateLimitSettings>,
    overrides: Arc<TierOverrides>,
}

impl RateLimiter {
    pub async fn start(
        bus: RedisBus,
        settings: RateLimitSettings,
    ) -> Result<Self, ractor::SpawnErr> {
        let mut refs = Vec::with_capacity(settings.shards.max(1));
        for _ in 0..settings.shards.max(1) {
            let (shard, _) = Actor::spawn(None, RateLimitShard, bus.clone()).await?;
            refs.push(shard);
        }
        Ok(Self {
            shards: Arc::new(refs),
            bus,
            settings: Arc::new(settings),
            overrides: Arc::default(),
        })
    }

    /// The per-tenant limits this limiter applies (see [`overrides`]).
    pub fn overrides(&self) -> &Arc<TierOverrides> {
        &self.overrides
    }

    /// Decides one request of `subject` in `tier`, at the limit an operator
    /// set for `tenant` if any; `None` when limits are off.
    pub async fn check(
        &self,
        tier: Tier,
        tenant: Option<TenantId>,
        subject: &str,
    ) -> Option<Decision> {
        if !self.settings.enabled {
            return None;
        }
        let limit = tenant
            .and_then(|tenant| self.overrides.per_minute(tier, tenant))
            .map_or_else(
                || tier.limit(&self.settings),
                |per_minute| Limit { per_minute },
            );
        Some(
            self.decide(Ask {
                tier: tier.label(),
                key: self.key(tier.label(), subject),
                limit,
                when_unavailable: tier.when_unavailable(&self.settings),
            })
            .await,
        )
    }

    /// The Redis key of `subject` in `tier`; the hash tag is the whole
    /// identity, so each key's script runs on one Redis Cluster slot.
    pub fn key(&self, tier: &str, subject: &str) -> String {
        let subject: String = subject
            .chars()
            .map(|c| if matches!(c, '{' | '}') { '_' } else { c })
            .collect();
        self.bus.key(&format!("rl:{tier}:{subject}"), "gcra")
    }

    pub async fn decide(&self, ask: Ask) -> Decision {
        let started = std::time::Instant::now();
        let decision = self.decide_in_shard(ask).await;
        metrics::histogram!("agentry_rate_limit_check_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        decision
    }

    async fn decide_in_shard(&self, ask: Ask) -> Decision {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        ask.key.hash(&mut hasher);
        let shard = &self.shards[(hasher.finish() % self.shards.len() as u64) as usize];
        let (limit, when_unavailable) = (ask.limit, ask.when_unavailable);
        let (reply, answer) = oneshot::channel();
        if shard.send_message(ShardMsg::Decide(ask, reply)).is_ok() {
            if let Ok(decision) = answer.await {
                return decision;
            }
        }
        // A shard that is gone answers like Redis being away, without the local state.
        tracing::error!("rate limits: a shard is gone");
        match when_unavailable {
            WhenUnavailable::FailClosed => Decision::refused_unchecked(limit),
            WhenUnavailable::Local => Decision {
                allowed: true,
                limit: limit.per_minute,
                remaining: 0,
                reset_after: Duration::ZERO,
                retry_after: None,
                unchecked: false,
            },
        }
    }

    pub fn stop(&self) {
        for shard in self.shards.iter() {
            shard.stop(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIXTY: Limit = Limit { per_minute: 60 };

    /// Runs requests at the given times (µs) through the math alone.
    fn admitted(times: &[i64], limit: Limit) -> Vec<bool> {
        let mut tat = None;
        times
            .iter()
            .map(|&now| {
                let (allowed, next) = step(tat, now, limit);
                tat = Some(next);
                allowed
            })
            .collect()
    }

    #[test]
    fn a_burst_of_the_limit_is_admitted_and_the_next_refused() {
        let burst = vec![0; 61];
        let outcome = admitted(&burst, SIXTY);
        assert!(outcome[..60].iter().all(|a| *a));
        assert!(!outcome[60]);
    }

    #[test]
    fn one_interval_later_one_more_is_admitted() {
        let mut times = vec![0; 60];
        times.extend([999_999, 1_000_000, 1_000_000]);
        let outcome = admitted(&times, SIXTY);
        assert_eq!(&outcome[60..], [false, true, false]);
    }

    #[test]
    fn headers_count_down_and_say_when_to_retry() {
        let (allowed, tat) = step(None, 0, SIXTY);
        let first = Decision::of(allowed, tat, 0, SIXTY);
        assert_eq!(
            (first.allowed, first.limit, first.remaining),
            (true, 60, 59)
        );
        assert_eq!(first.reset_after, Duration::from_secs(1));
        let mut tat = Some(tat);
        let mut last = first;
        for _ in 0..60 {
            let (allowed, next) = step(tat, 0, SIXTY);
            tat = Some(next);
            last = Decision::of(allowed, next, 0, SIXTY);
        }
        assert!(!last.allowed);
        assert_eq!(last.remaining, 0);
        assert_eq!(last.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(last.reset_after, Duration::from_secs(60));
    }

    #[test]
    fn an_idle_key_is_back_to_a_full_burst() {
        let mut times = vec![0; 60];
        times.extend(vec![60_000_000; 60]);
        times.push(60_000_000);
        let outcome = admitted(&times, SIXTY);
        assert!(outcome[..120].iter().all(|a| *a));
        assert!(!outcome[120]);
    }

    fn settings(fail_closed: &[&str]) -> RateLimitSettings {
        RateLimitSettings {
            enabled: true,
            shards: 2,
            auth: 3,
            admin: 3,
            chat: 3,
            upload: 3,
            standard: 3,
            provider_webhooks: 3,
            widget_sessions: 3,
            widget_messages: 3,
            api_tokens: 3,
            privacy: 3,
            fail_closed: fail_closed.iter().map(|t| t.to_string()).collect(),
            overrides_refresh_secs: 5,
        }
    }

    #[tokio::test]
    async fn without_redis_auth_fails_closed_and_other_tiers_limit_locally() {
        // Nothing listens on port 1: every call fails at once.
        let bus = RedisBus::connect(&crate::configuration::RedisSettings {
            url: agentry_actors::Secret::new("redis://127.0.0.1:1".into()),
            prefix: "rl-test".into(),
            pool_size: 1,
            stream_max_len: 10,
        })
        .unwrap();
        let limiter = RateLimiter::start(bus, settings(&["auth"])).await.unwrap();
        let login = limiter
            .check(Tier::Auth, None, "198.51.100.1")
            .await
            .unwrap();
        assert!(!login.allowed && login.unchecked, "{login:?}");
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            let decision = limiter
                .check(Tier::Standard, None, "tenant-1")
                .await
                .unwrap();
            outcomes.push((decision.allowed, decision.unchecked));
        }
        assert_eq!(
            outcomes,
            [(true, false), (true, false), (true, false), (false, false)],
            "the same limit, counted on this instance"
        );
        limiter.stop();
    }

    #[test]
    fn settings_refuse_a_zero_limit_and_unknown_tiers() {
        assert!(Tier::check_settings(&settings(&["auth"])).is_ok());
        let mut zero = settings(&[]);
        zero.chat = 0;
        assert!(Tier::check_settings(&zero).unwrap_err().contains("chat"));
        let mut too_fine = settings(&[]);
        too_fine.chat = MAX_PER_MINUTE + 1;
        assert!(Tier::check_settings(&too_fine).is_err());
        assert!(Tier::check_settings(&settings(&["logins"])).is_err());
    }

    #[test]
    fn high_limits_keep_their_precision() {
        let limit = Limit {
            per_minute: 1_000_000,
        };
        let outcome = admitted(&vec![0; 1_000_001], limit);
        assert_eq!(outcome.iter().filter(|a| **a).count(), 1_000_000);
    }
}
