//! Cron schedules and the tick each run is named by.
//!
//! Schedules are parsed the way `tokio-cron-scheduler` parses them (seconds
//! required, day-of-month and day-of-week both honoured), so a schedule that
//! passes [`parse`] at load is one the scheduler accepts.

use chrono::{DateTime, SubsecRound, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// Parses a six-field schedule (`sec min hour day-of-month month day-of-week`).
pub fn parse(schedule: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(schedule)
        .map_err(|error| error.to_string())
}

/// The tick a run at `now` belongs to: the schedule's latest fire time at or
/// before `now`, to the second. The scheduler fires a little after the fire
/// time (it polls every 500 ms), so every instance firing for one occurrence
/// names the same tick, whatever its delay; one delayed past the next
/// occurrence names that one, which is then the work it does.
pub fn tick_at(schedule: &Cron, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .find_previous_occurrence(&now.trunc_subsecs(0), true)
        .ok()
}

/// The time between the schedule's next two fire times after `now`: what
/// an alert allows between successes (`agentry_job_interval_seconds`).
pub fn interval_after(schedule: &Cron, now: DateTime<Utc>) -> Option<chrono::Duration> {
    let first = schedule.find_next_occurrence(&now, false).ok()?;
    let second = schedule.find_next_occurrence(&first, false).ok()?;
    Some(second - first)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32, s: u32, ms: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, m, s).unwrap()
            + chrono::Duration::milliseconds(ms.into())
    }

    #[test]
    fn six_field_schedules_parse_and_others_do_not() {
        for good in [
            "0 */5 * * * *",
            "* * * * * *",
            "30 0 3 * * MON-FRI",
            "0 20 3 * * *",
        ] {
            assert!(parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "*/5 * * * *",
            "every hour",
            "61 * * * * *",
            "0 0 25 * * *",
            "* * * * * * * *",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_interval_is_the_gap_between_the_next_two_fire_times() {
        let interval = |text: &str| interval_after(&parse(text).unwrap(), at(12, 7, 31, 0));
        assert_eq!(
            interval("0 */5 * * * *"),
            Some(chrono::Duration::minutes(5))
        );
        assert_eq!(interval("0 20 3 * * *"), Some(chrono::Duration::days(1)));
    }

    #[test]
    fn a_tick_is_the_latest_fire_time_at_or_before_now_to_the_second() {
        let every_five_minutes = parse("0 */5 * * * *").unwrap();
        assert_eq!(
            tick_at(&every_five_minutes, at(12, 7, 31, 600)),
            Some(at(12, 5, 0, 0))
        );
        // Exactly on the fire time, and just after it (the scheduler's delay).
        assert_eq!(
            tick_at(&every_five_minutes, at(12, 5, 0, 0)),
            Some(at(12, 5, 0, 0))
        );
        assert_eq!(
            tick_at(&every_five_minutes, at(12, 5, 0, 499)),
            Some(at(12, 5, 0, 0))
        );
        assert_eq!(
            tick_at(&every_five_minutes, at(12, 4, 59, 999)),
            Some(at(12, 0, 0, 0))
        );

        let every_second = parse("* * * * * *").unwrap();
        assert_eq!(
            tick_at(&every_second, at(0, 0, 1, 900)),
            Some(at(0, 0, 1, 0))
        );
        assert_eq!(tick_at(&every_second, at(0, 0, 2, 0)), Some(at(0, 0, 2, 0)));

        let nightly = parse("0 20 3 * * *").unwrap();
        assert_eq!(
            tick_at(&nightly, at(2, 0, 0, 0)),
            Some(Utc.with_ymd_and_hms(2026, 11, 30, 3, 20, 0).unwrap())
        );
    }

    #[test]
    fn two_instances_firing_apart_name_one_tick() {
        let every_ten_seconds = parse("*/10 * * * * *").unwrap();
        let early = tick_at(&every_ten_seconds, at(9, 0, 10, 20));
        let late = tick_at(&every_ten_seconds, at(9, 0, 10, 980));
        assert_eq!(early, late);
        assert_eq!(early, Some(at(9, 0, 10, 0)));
    }
}
