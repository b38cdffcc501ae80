//! When a failed webhook delivery is tried again: its schedule's delay for
//! the attempt, spread by jitter so that receivers coming back after an
//! outage are not hit by every retry at once, and a receiver's `Retry-After`
//! honoured within bounds. Pure functions; the dispatcher supplies the
//! randomness and the clock.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The share of a delay that jitter may add or take (±10 %).
const JITTER: f64 = 0.1;

/// Delays between attempts: the first retry waits `delays[0]`, and so on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    pub delays: Vec<Duration>,
    /// The longest `Retry-After` a receiver can ask for.
    pub max_retry_after: Duration,
}

impl Default for RetrySchedule {
    /// About 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h: eight attempts over
    /// a day and a bit.
    fn default() -> Self {
        let secs = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];
        Self {
            delays: secs.into_iter().map(Duration::from_secs).collect(),
            max_retry_after: Duration::from_secs(86_400),
        }
    }
}

impl RetrySchedule {
    /// How long to wait after failed attempt number `attempt` (1 for the
    /// first), or `None` when the schedule is exhausted. `jitter` is a uniform
    /// sample in [0, 1); `retry_after` is what the receiver asked for.
    pub fn delay_after(
        &self,
        attempt: u32,
        jitter: f64,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let scheduled = *self.delays.get(attempt.checked_sub(1)? as usize)?;
        let factor = 1.0 - JITTER + 2.0 * JITTER * jitter.clamp(0.0, 1.0);
        let jittered = scheduled.mul_f64(factor);
        // A receiver may ask for more time, never for less, and not forever.
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(self.max_retry_after)),
            None => jittered,
        })
    }
}

/// A `Retry-After` value: delta-seconds or an HTTP date. Past dates and
/// anything unreadable mean no request.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    (at - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_waits_longer_each_time_and_ends() {
        let schedule = RetrySchedule::default();
        let mid: Vec<u64> = (1..=7)
            .map(|attempt| schedule.delay_after(attempt, 0.5, None).unwrap().as_secs())
            .collect();
        assert_eq!(mid, [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]);
        assert_eq!(
            schedule.delay_after(8, 0.5, None),
            None,
            "eight attempts in all"
        );
        assert_eq!(schedule.delay_after(0, 0.5, None), None);
    }

    #[test]
    fn the_configured_schedule_is_the_default_one() {
        let settings = crate::configuration::Settings::load_from(
            [("AGENTRY_ENV".to_owned(), "test".to_owned())].into(),
        )
        .unwrap();
        assert_eq!(settings.webhooks.retry_schedule(), RetrySchedule::default());
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let schedule = RetrySchedule::default();
        let low = schedule.delay_after(2, 0.0, None).unwrap();
        let high = schedule.delay_after(2, 0.999_999, None).unwrap();
        assert_eq!(low, Duration::from_secs(270));
        assert!(high > Duration::from_secs(329) && high <= Duration::from_secs(330));
        assert_eq!(
            schedule.delay_after(2, 7.0, None),
            Some(Duration::from_secs(330))
        );
    }

    #[test]
    fn retry_after_can_lengthen_a_wait_within_bounds_but_never_shorten_it() {
        let schedule = RetrySchedule::default();
        let ask = |seconds| Some(Duration::from_secs(seconds));
        assert_eq!(schedule.delay_after(1, 0.5, ask(60)), ask(60));
        assert_eq!(schedule.delay_after(2, 0.5, ask(1)), ask(300));
        assert_eq!(schedule.delay_after(1, 0.5, ask(10_000_000)), ask(86_400));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 11:00:00 GMT", now),
            None
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
