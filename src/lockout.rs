//! Brute-force lockout: failed authentications are counted per client IP in
//! Redis, so the count holds across instances; after `max_failures` within
//! `window_secs` the IP is refused for `lockout_secs`, even with a correct
//! credential (otherwise a guesser would simply keep going until one works).
//!
//! Both keys of an IP share one hash tag, so the script stays atomic on Redis
//! Cluster. When Redis cannot be reached the lockout fails open, with a warning:
//! refusing every login because the counter is down would be an outage of its own.

use std::net::IpAddr;
use std::time::Duration;

use fred::prelude::*;
use sha2::{Digest, Sha256};

use crate::bus::RedisBus;
use crate::configuration::LockoutSettings;

/// Counts one failure; when it reaches the limit, sets the lock and clears the
/// count. Returns 1 when this failure started a lockout.
const RECORD_FAILURE: &str = r#"
local failures = redis.call('INCR', KEYS[1])
if failures == 1 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
if failures >= tonumber(ARGV[2]) then
    redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
    redis.call('DEL', KEYS[1])
    return 1
end
return 0
"#;

/// How long a lockout call may wait for Redis: a Redis outage must not add
/// the bus's full command timeout to every authenticated request.
const REDIS_BUDGET: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct Lockout {
    bus: RedisBus,
    settings: LockoutSettings,
}

impl Lockout {
    pub fn new(bus: RedisBus, settings: LockoutSettings) -> Self {
        Self { bus, settings }
    }

    fn keys(&self, ip: IpAddr) -> (String, String) {
        let tag = format!("lockout:{}", ip_key(ip));
        (self.bus.key(&tag, "failures"), self.bus.key(&tag, "locked"))
    }

    /// How long `ip` is still locked out, if it is.
    pub async fn locked_for(&self, ip: Option<IpAddr>) -> Option<Duration> {
        let ip = ip?;
        let (_, locked) = self.keys(ip);
        let ttl = tokio::time::timeout(REDIS_BUDGET, self.bus.pool().ttl::<i64, _>(locked)).await;
        match ttl {
            Ok(Ok(secs)) if secs > 0 => Some(Duration::from_secs(secs as u64)),
            Ok(Ok(_)) => None,
            Ok(Err(error)) => {
                tracing::warn!(%error, "lockout check skipped: Redis unavailable");
                None
            }
            Err(_) => {
                tracing::warn!("lockout check skipped: Redis too slow");
                None
            }
        }
    }

    /// Counts a failed authentication from `ip`.
    pub async fn record_failure(&self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        let (failures, locked) = self.keys(ip);
        let script = crate::bus::eval::<i64>(
            self.bus.pool().next(),
            RECORD_FAILURE,
            vec![failures.into(), locked.into()],
            vec![
                self.settings.window_secs.to_string().into(),
                self.settings.max_failures.to_string().into(),
                self.settings.lockout_secs.to_string().into(),
            ],
        );
        let started = match tokio::time::timeout(REDIS_BUDGET, script).await {
            Ok(result) => result.map_err(|error| error.to_string()),
            Err(_) => Err("timed out".to_owned()),
        };
        match started {
            Ok(1) => {
                metrics::counter!("agentry_auth_lockouts_total").increment(1);
                // The audit line: which client (hashed, never the raw IP or the credential).
                tracing::warn!(
                    client = %ip_fingerprint(ip),
                    failures = self.settings.max_failures,
                    window_secs = self.settings.window_secs,
                    lockout_secs = self.settings.lockout_secs,
                    "authentication lockout: too many failures from one client"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "auth failure not counted: Redis unavailable"),
        }
    }
}

/// The counter's key for an IP: IPv6 clients are counted per /64, the block one
/// subscriber usually holds, or rotating addresses would escape the count.
fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// A short, stable, non-reversible-at-a-glance label for logs.
pub fn ip_fingerprint(ip: IpAddr) -> String {
    let digest = Sha256::digest(ip_key(ip).as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(mapped), "192.0.2.7");
        assert_eq!(ip_fingerprint(a).len(), 12);
        assert!(!ip_fingerprint("192.0.2.7".parse().unwrap()).contains("192"));
    }
}
