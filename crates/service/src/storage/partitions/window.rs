//! Date-window math: which days get a partition, and before which instant a partition
//! is old enough to retire.

use std::fmt;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};

use super::PartitionError;

const PARTITION_PREFIX: &str = "messages_p";

/// One day's partition. The only way to get a partition name or bound into SQL: it is
/// built from a date (years 1..=9999, which Postgres and the `YYYYMMDD` name both
/// accept), so formatted DDL can never carry anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DailyPartition {
    day: NaiveDate,
}

impl DailyPartition {
    /// The partition for `day`, or `None` outside years 1..=9999.
    pub fn for_day(day: NaiveDate) -> Option<DailyPartition> {
        (1..=9999)
            .contains(&day.year())
            .then_some(DailyPartition { day })
    }

    /// Reads a name we generate (`messages_pYYYYMMDD`); anything else is not ours.
    pub fn parse_name(name: &str) -> Option<DailyPartition> {
        let digits = name.strip_prefix(PARTITION_PREFIX)?;
        if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let day = NaiveDate::parse_from_str(digits, "%Y%m%d").ok()?;
        DailyPartition::for_day(day)
    }

    pub(crate) fn day(&self) -> NaiveDate {
        self.day
    }

    /// `messages_pYYYYMMDD`.
    pub fn name(&self) -> String {
        format!("{PARTITION_PREFIX}{}", self.day.format("%Y%m%d"))
    }

    /// Inclusive lower bound: the day at 00:00 UTC.
    pub fn start(&self) -> DateTime<Utc> {
        self.day.and_time(chrono::NaiveTime::MIN).and_utc()
    }

    /// Exclusive upper bound: the next day at 00:00 UTC.
    pub fn end(&self) -> DateTime<Utc> {
        self.start() + chrono::TimeDelta::days(1)
    }

    /// `FOR VALUES FROM (...) TO (...)`, with explicit `+00` offsets so the session time
    /// zone cannot shift the bounds.
    pub(super) fn bound_sql(&self) -> String {
        format!(
            "FOR VALUES FROM ('{}') TO ('{}')",
            self.start().format("%Y-%m-%d %H:%M:%S+00"),
            self.end().format("%Y-%m-%d %H:%M:%S+00"),
        )
    }

    /// True when this partition's range and `[lower, upper)` share an instant.
    pub(super) fn overlaps(&self, lower: DateTime<Utc>, upper: DateTime<Utc>) -> bool {
        lower < self.end() && upper > self.start()
    }
}

impl fmt::Display for DailyPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The partitions `ensure_partitions` maintains: yesterday (late messages around
/// midnight) through today + `ahead_days`.
pub fn partition_window(
    today: NaiveDate,
    ahead_days: u32,
) -> Result<Vec<DailyPartition>, PartitionError> {
    let out_of_range = || PartitionError::DateOutOfRange {
        day: today,
        days: ahead_days,
    };
    let first = today
        .checked_sub_days(Days::new(1))
        .ok_or_else(out_of_range)?;
    (0..=u64::from(ahead_days) + 1)
        .map(|offset| {
            first
                .checked_add_days(Days::new(offset))
                .and_then(DailyPartition::for_day)
                .ok_or_else(out_of_range)
        })
        .collect()
}

/// The instant before which a partition must end to be archived: today 00:00 UTC minus
/// `retention_days`. With 30, on March 31st the partitions of March 1st..30th and
/// today are kept, February 29th and older go.
pub fn retention_cutoff(
    today: NaiveDate,
    retention_days: u32,
) -> Result<DateTime<Utc>, PartitionError> {
    today
        .checked_sub_days(Days::new(u64::from(retention_days)))
        .map(|day| day.and_time(chrono::NaiveTime::MIN).and_utc())
        .ok_or(PartitionError::DateOutOfRange {
            day: today,
            days: retention_days,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    #[test]
    fn names_and_bounds_come_from_the_date() {
        let p = DailyPartition::for_day(day(2024, 2, 29)).expect("in range");
        assert_eq!(p.name(), "messages_p20240229");
        assert_eq!(
            p.bound_sql(),
            "FOR VALUES FROM ('2024-02-29 00:00:00+00') TO ('2024-03-01 00:00:00+00')"
        );
        assert_eq!(DailyPartition::parse_name("messages_p20240229"), Some(p));
    }

    #[test]
    fn parse_name_rejects_what_we_did_not_create() {
        for name in [
            "messages_default",
            "messages_p2024022",
            "messages_p202402290",
            "messages_p20240230",
            "messages_p+0240229",
            "other_p20240229",
        ] {
            assert_eq!(DailyPartition::parse_name(name), None, "{name}");
        }
    }

    #[test]
    fn years_outside_postgres_and_the_name_format_are_refused() {
        assert_eq!(DailyPartition::for_day(day(10000, 1, 1)), None);
        assert_eq!(DailyPartition::for_day(day(0, 1, 1)), None);
    }

    #[test]
    fn window_is_yesterday_through_today_plus_ahead() {
        let window = partition_window(day(2024, 12, 30), 3).expect("in range");
        let names: Vec<_> = window.iter().map(DailyPartition::name).collect();
        assert_eq!(
            names,
            [
                "messages_p20241229",
                "messages_p20241230",
                "messages_p20241231",
                "messages_p20250101",
                "messages_p20250102"
            ]
        );
    }

    #[test]
    fn retention_keeps_the_last_n_full_days() {
        let cutoff = retention_cutoff(day(2024, 3, 31), 30).expect("in range");
        let kept = DailyPartition::for_day(day(2024, 3, 1)).expect("in range");
        let gone = DailyPartition::for_day(day(2024, 2, 29)).expect("in range");
        assert!(kept.end() > cutoff);
        assert!(gone.end() <= cutoff);
    }
}
