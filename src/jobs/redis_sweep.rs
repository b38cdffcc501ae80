//! Redis keys that must not outlive a widget session: the sessions
//! themselves (they hold the visitor's IP) and the counters keyed by a client
//! IP (rate limits `{rl:…}`, lockout `{lockout:…}`). Every writer sets a TTL,
//! so this only finds leftovers: a key written without one (an old version, a
//! hand-made key, a failed EXPIRE), or one set to live too long.
//!
//! Keys are found with SCAN over this deployment's prefix (never KEYS, which
//! blocks Redis), on every primary when `REDIS_URL` is a cluster.

use std::time::Duration;

use chrono::{DateTime, Utc};
use fred::prelude::*;
use fred::types::scan::ScanType;
use futures_util::{Stream, StreamExt, TryStreamExt};

use super::Counts;
use crate::bus::RedisBus;
use crate::widget_sessions::WidgetSession;

/// Keys asked for per SCAN page.
const SCAN_COUNT: u32 = 500;

/// Deletes a key without a TTL, or shortens a TTL beyond ARGV[1] ms to it;
/// atomic per key, so a counter rewritten meanwhile is judged as it is now.
/// Returns 1 deleted, 2 shortened, 0 left alone.
const BOUND_TTL: &str = r#"
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -1 then
    redis.call('DEL', KEYS[1])
    return 1
end
if ttl > tonumber(ARGV[1]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    return 2
end
return 0
"#;

/// What a sweep found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub scanned: i64,
    pub deleted: i64,
    pub shortened: i64,
}

impl Swept {
    pub fn count_into(&self, counts: &mut Counts, what: &'static str) {
        let (scanned, deleted, shortened) = match what {
            "widget_keys" => (
                "widget_keys_scanned",
                "widget_keys_deleted",
                "widget_keys_shortened",
            ),
            _ => ("ip_keys_scanned", "ip_keys_deleted", "ip_keys_shortened"),
        };
        counts.insert(scanned, self.scanned);
        counts.insert(deleted, self.deleted);
        counts.insert(shortened, self.shortened);
    }
}

/// What to do with a widget session's key.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionKey {
    Keep,
    Delete,
    /// Expire at this Unix time in milliseconds.
    ExpireAt(i64),
}

/// A session key lives until its session's `expires_at`, and never longer
/// than one session lifetime from now; without a TTL, unreadable or past its
/// expiry it goes now (an unreadable session admits no one anyway).
pub fn judge_session_key(
    pttl_ms: i64,
    session: Option<&WidgetSession>,
    now: DateTime<Utc>,
    lifetime: Duration,
) -> SessionKey {
    let Some(session) = session else {
        return SessionKey::Delete;
    };
    if pttl_ms == -1 || session.expires_at <= now {
        return SessionKey::Delete;
    }
    let longest = now + chrono::Duration::milliseconds(lifetime.as_millis() as i64);
    let deadline = session.expires_at.min(longest).timestamp_millis();
    // A second of slack: the writer rounds its TTL up to the millisecond.
    if now.timestamp_millis() + pttl_ms > deadline + 1000 {
        SessionKey::ExpireAt(deadline)
    } else {
        SessionKey::Keep
    }
}

/// `ws:*` session keys: see [`judge_session_key`].
pub async fn widget_sessions(
    bus: &RedisBus,
    prefix: &str,
    lifetime: Duration,
) -> Result<Swept, fred::error::Error> {
    let client = bus.pool().next();
    let mut keys = scan(client, format!("{}:{{ws:*}}:session", glob_escape(prefix)));
    let mut swept = Swept::default();
    while let Some(key) = keys.try_next().await? {
        swept.scanned += 1;
        let (value, pttl): (Option<String>, i64) = (
            client.get(key.clone()).await?,
            client.pttl(key.clone()).await?,
        );
        if pttl == -2 {
            continue;
        }
        let session = value.and_then(|json| serde_json::from_str::<WidgetSession>(&json).ok());
        match judge_session_key(pttl, session.as_ref(), Utc::now(), lifetime) {
            SessionKey::Keep => {}
            SessionKey::Delete => {
                let _: i64 = client.del(key).await?;
                swept.deleted += 1;
            }
            SessionKey::ExpireAt(at_ms) => {
                let _: i64 = client.pexpire_at(key, at_ms, None).await?;
                swept.shortened += 1;
            }
        }
    }
    Ok(swept)
}

/// Rate-limit and lockout counters keyed by client IP: deleted without a
/// TTL, and never left to live longer than one widget session lifetime.
pub async fn ip_counters(
    bus: &RedisBus,
    prefix: &str,
    lifetime: Duration,
) -> Result<Swept, fred::error::Error> {
    let client = bus.pool().next();
    let prefix = glob_escape(prefix);
    let bound_ms = lifetime.as_millis().max(1).to_string();
    let mut swept = Swept::default();
    for pattern in [
        format!("{prefix}:{{rl:*}}:gcra"),
        format!("{prefix}:{{lockout:*}}:*"),
    ] {
        let mut keys = scan(client, pattern);
        while let Some(key) = keys.try_next().await? {
            swept.scanned += 1;
            let done: i64 =
                crate::bus::eval(client, BOUND_TTL, vec![key], vec![bound_ms.as_str().into()])
                    .await?;
            match done {
                1 => swept.deleted += 1,
                2 => swept.shortened += 1,
                _ => {}
            }
        }
    }
    Ok(swept)
}

/// The keys matching `pattern`, page by page: on every primary of a cluster
/// (a plain SCAN there reads one node's keys only).
pub fn scan(
    client: &Client,
    pattern: String,
) -> std::pin::Pin<Box<dyn Stream<Item = Result<Key, fred::error::Error>> + Send>> {
    if client.is_clustered() {
        client
            .scan_cluster_buffered(pattern, Some(SCAN_COUNT), Some(ScanType::String))
            .boxed()
    } else {
        client
            .scan_buffered(pattern, Some(SCAN_COUNT), Some(ScanType::String))
            .boxed()
    }
}

/// Escapes glob metacharacters, so a prefix matches only itself.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use agentry_actors::{AgentId, ConversationId, TenantId, WidgetId};

    use super::*;

    fn session(expires_at: DateTime<Utc>) -> WidgetSession {
        WidgetSession {
            tenant: TenantId::new(),
            agent: AgentId::new(),
            widget: WidgetId::new(),
            conversation: ConversationId::new(),
            visitor_ip: Some("192.0.2.7".into()),
            expires_at,
        }
    }

    #[test]
    fn session_keys_live_until_their_session_expires_and_no_longer() {
        let now = Utc::now();
        let lifetime = Duration::from_secs(1800);
        let live = session(now + chrono::Duration::seconds(600));
        assert_eq!(
            judge_session_key(600_000, Some(&live), now, lifetime),
            SessionKey::Keep
        );
        // No TTL, past its expiry, or unreadable: gone.
        assert_eq!(
            judge_session_key(-1, Some(&live), now, lifetime),
            SessionKey::Delete
        );
        let over = session(now - chrono::Duration::seconds(1));
        assert_eq!(
            judge_session_key(5_000, Some(&over), now, lifetime),
            SessionKey::Delete
        );
        assert_eq!(
            judge_session_key(5_000, None, now, lifetime),
            SessionKey::Delete
        );
        // A TTL beyond the session's expiry is brought back to it...
        assert_eq!(
            judge_session_key(3_600_000, Some(&live), now, lifetime),
            SessionKey::ExpireAt(live.expires_at.timestamp_millis())
        );
        // ...and an expiry beyond one lifetime from now to that.
        let forever = session(now + chrono::Duration::days(365));
        assert_eq!(
            judge_session_key(86_400_000, Some(&forever), now, lifetime),
            SessionKey::ExpireAt((now + chrono::Duration::seconds(1800)).timestamp_millis())
        );
    }

    #[test]
    fn a_prefix_with_glob_characters_matches_only_itself() {
        assert_eq!(glob_escape("agentry"), "agentry");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
