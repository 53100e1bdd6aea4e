//! Quiet hours: the nightly window in which nothing scheduled may air, and which planned
//! occurrences would break it. Pure: the caller supplies the window and timezone, and
//! decides what to do about a conflict (the API refuses the campaign).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveTime, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Schedule, ScheduleError};

/// A daily window of wall-clock time, start inclusive and end exclusive, which may span
/// midnight (`22:00-05:00`). Start and end always differ: a zero-length window would
/// either mean nothing or the whole day, so we make the operator say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    start: NaiveTime,
    end: NaiveTime,
}

impl QuietHours {
    /// Parses `HH:MM-HH:MM` (hours may have one digit). An empty or blank string means no
    /// quiet hours and gives `Ok(None)`.
    pub fn parse(text: &str) -> Result<Option<Self>, ScheduleError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let invalid = |reason: String| ScheduleError::InvalidQuietHours {
            text: trimmed.to_string(),
            reason,
        };
        let Some((start, end)) = trimmed.split_once('-') else {
            return Err(invalid(
                "expected a start and an end as HH:MM-HH:MM, such as 22:00-05:00".into(),
            ));
        };
        let start = parse_time(start.trim()).map_err(&invalid)?;
        let end = parse_time(end.trim()).map_err(&invalid)?;
        if start == end {
            return Err(invalid(
                "start and end are the same; leave quiet hours empty to have none".into(),
            ));
        }
        Ok(Some(Self { start, end }))
    }

    /// When quiet hours begin (inclusive).
    pub fn start(&self) -> NaiveTime {
        self.start
    }

    /// When quiet hours end (exclusive).
    pub fn end(&self) -> NaiveTime {
        self.end
    }

    /// Whether this wall-clock time falls in quiet hours.
    pub fn contains(&self, local: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= local && local < self.end
        } else {
            local >= self.start || local < self.end
        }
    }

    /// The first `limit` occurrences of `schedule` in [`from`, `to`) whose wall-clock time
    /// in `timezone` falls in quiet hours, in order.
    ///
    /// Walks the schedule's occurrences one by one, so the cost grows with the number of
    /// occurrences in the window, not with the number of conflicts.
    pub fn conflicting_occurrences(
        &self,
        schedule: &Schedule,
        timezone: Tz,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        schedule
            .occurrences_iter(from, to)
            .filter(|instant| self.contains(instant.with_timezone(&timezone).time()))
            .take(limit)
            .collect()
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start.hour(),
            self.start.minute(),
            self.end.hour(),
            self.end.minute()
        )
    }
}

/// Parses non-empty quiet hours; the empty string, which [`QuietHours::parse`] reads as
/// "none", is an error here since there is no value to return.
impl FromStr for QuietHours {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)?.ok_or_else(|| ScheduleError::InvalidQuietHours {
            text: s.to_string(),
            reason: "empty; omit quiet hours to have none".into(),
        })
    }
}

impl Serialize for QuietHours {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for QuietHours {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `H:MM` or `HH:MM`, 00:00 to 23:59.
fn parse_time(text: &str) -> Result<NaiveTime, String> {
    let not_a_time = || format!("`{text}` is not a time of day from 00:00 to 23:59");
    let (hour, minute) = text.split_once(':').ok_or_else(not_a_time)?;
    let digits = |s: &str, widths: &[usize]| {
        widths.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(hour, &[1, 2]) || !digits(minute, &[2]) {
        return Err(not_a_time());
    }
    let (hour, minute) = (
        hour.parse().map_err(|_| not_a_time())?,
        minute.parse().map_err(|_| not_a_time())?,
    );
    NaiveTime::from_hms_opt(hour, minute, 0).ok_or_else(not_a_time)
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};

    use super::super::Cron;
    use super::*;

    fn quiet(text: &str) -> QuietHours {
        QuietHours::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .unwrap_or_else(|| panic!("{text}: parsed as none"))
    }

    fn time(h: u32, m: u32, s: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, s).expect("valid test time")
    }

    fn error(text: &str) -> String {
        match QuietHours::parse(text) {
            Ok(q) => panic!("`{text}` should be rejected, parsed as {q:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("valid test instant")
    }

    fn hourly_in(timezone: Tz) -> Schedule {
        Schedule {
            cron: vec![Cron::parse("0 * * * *").expect("valid rule")],
            timezone,
            starts_on: None,
            ends_on: None,
        }
    }

    #[test]
    fn quiet_hours_spanning_midnight_contain_the_night_and_not_the_day() {
        let q = quiet("22:00-05:00");
        assert!(q.contains(time(22, 0, 0)));
        assert!(q.contains(time(23, 59, 59)));
        assert!(q.contains(time(0, 0, 0)));
        assert!(q.contains(time(4, 59, 59)));
        assert!(!q.contains(time(5, 0, 0)));
        assert!(!q.contains(time(12, 0, 0)));
        assert!(!q.contains(time(21, 59, 59)));
    }

    #[test]
    fn quiet_hours_within_one_day_contain_only_their_span() {
        let q = quiet("12:00-13:30");
        assert!(!q.contains(time(11, 59, 59)));
        assert!(q.contains(time(12, 0, 0)));
        assert!(q.contains(time(13, 29, 59)));
        assert!(!q.contains(time(13, 30, 0)));
        assert!(!q.contains(time(0, 0, 0)));
    }

    #[test]
    fn half_hours_and_single_digit_hours_are_accepted() {
        let q = quiet("21:30-5:00");
        assert_eq!((q.start(), q.end()), (time(21, 30, 0), time(5, 0, 0)));
        assert!(!q.contains(time(21, 29, 0)));
        assert!(q.contains(time(21, 30, 0)));
        assert_eq!(q.to_string(), "21:30-05:00");
        assert_eq!(quiet(" 22:00 - 05:00 ").to_string(), "22:00-05:00");
    }

    #[test]
    fn an_empty_string_means_no_quiet_hours() {
        assert_eq!(QuietHours::parse(""), Ok(None));
        assert_eq!(QuietHours::parse("  "), Ok(None));
    }

    #[test]
    fn impossible_times_half_windows_and_empty_windows_are_rejected() {
        assert!(error("25:00-05:00").contains("`25:00` is not a time of day"));
        assert!(error("22:60-05:00").contains("`22:60`"));
        assert!(error("22:00-24:00").contains("`24:00`"));
        assert!(error("22:00").contains("expected a start and an end"));
        assert!(error("22:00-22:00").contains("the same"));
        assert!(error("22-05").contains("`22`"));
        assert!(error("ab:cd-05:00").contains("`ab:cd`"));
        assert!(error("22:0-05:00").contains("`22:0`"));
        assert!(error("22:00-05:00-06:00").contains("`05:00-06:00`"));
    }

    #[test]
    fn quiet_hours_serialise_as_text_and_deserialising_validates() {
        let q = quiet("22:00-05:00");
        let json = serde_json::to_string(&q).expect("serialises");
        assert_eq!(json, "\"22:00-05:00\"");
        assert_eq!(serde_json::from_str::<QuietHours>(&json).ok(), Some(q));
        assert!(serde_json::from_str::<QuietHours>("\"25:00-05:00\"").is_err());
        assert!(serde_json::from_str::<QuietHours>("\"\"").is_err());
    }

    #[test]
    fn conflicts_are_the_occurrences_that_fall_in_quiet_hours_in_order() {
        let tz = chrono_tz::Asia::Ho_Chi_Minh;
        let schedule = hourly_in(tz);
        // 2024-06-03 00:00 to 2024-06-04 00:00 in Hanoi (UTC+7).
        let (from, to) = (utc(2024, 6, 2, 17, 0), utc(2024, 6, 3, 17, 0));
        let conflicts = quiet("22:00-05:00").conflicting_occurrences(&schedule, tz, from, to, 100);
        let local_hours: Vec<u32> = conflicts
            .iter()
            .map(|t| t.with_timezone(&tz).hour())
            .collect();
        assert_eq!(local_hours, [0, 1, 2, 3, 4, 22, 23]);
    }

    #[test]
    fn conflicts_stop_at_the_limit() {
        let tz = chrono_tz::Asia::Ho_Chi_Minh;
        let schedule = hourly_in(tz);
        let (from, to) = (utc(2024, 6, 2, 17, 0), utc(2025, 6, 2, 17, 0));
        let conflicts = quiet("22:00-05:00").conflicting_occurrences(&schedule, tz, from, to, 3);
        assert_eq!(
            conflicts,
            [from, utc(2024, 6, 2, 18, 0), utc(2024, 6, 2, 19, 0)]
        );
    }

    #[test]
    fn quiet_hours_are_judged_in_the_given_timezone_not_the_schedules() {
        // 06:00 in Hanoi is 01:00 in Berlin (summer): quiet there, not in Hanoi.
        let schedule = Schedule {
            cron: vec![Cron::parse("0 6 * * *").expect("valid rule")],
            timezone: chrono_tz::Asia::Ho_Chi_Minh,
            starts_on: None,
            ends_on: NaiveDate::from_ymd_opt(2024, 6, 3),
        };
        let (from, to) = (utc(2024, 6, 1, 0, 0), utc(2024, 7, 1, 0, 0));
        let q = quiet("22:00-05:00");
        let in_hanoi =
            q.conflicting_occurrences(&schedule, chrono_tz::Asia::Ho_Chi_Minh, from, to, 10);
        assert!(in_hanoi.is_empty());
        let in_berlin =
            q.conflicting_occurrences(&schedule, chrono_tz::Europe::Berlin, from, to, 10);
        assert_eq!(
            in_berlin,
            [utc(2024, 6, 1, 23, 0), utc(2024, 6, 2, 23, 0)],
            "06:00 on 2 and 3 June in Hanoi; 1 June's 06:00 is before `from`"
        );
    }
}
