//! Cron rules with their POSIX (Vixie cron) meaning: parsing, validation and matching of a
//! local wall-clock time. Knows nothing of timezones, windows or DST (see the parent
//! module), and never reads the clock.
//!
//! We match fields ourselves instead of translating into the `cron` crate: its numbering
//! (Sunday = 1) and its AND of day-of-month with day-of-week would both have to be undone,
//! and a bit set per field is all POSIX cron is.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ScheduleError;

/// A validated cron rule: 5 POSIX fields (`min hour dom mon dow`) or 6 with seconds first
/// (`sec min hour dom mon dow`), or a macro such as `@daily`.
///
/// Day-of-week 0 and 7 are both Sunday. Day-of-month and day-of-week combine like Vixie
/// cron: when both fields are restricted the rule fires on days matching *either*; when
/// one of them starts with `*` (`*`, `*/2`) a day must match *both*, so `0 6 * * 1` is
/// Mondays only and `0 6 */2 * 1` is odd-numbered Mondays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    /// What the operator typed, kept for display and storage.
    text: String,
    /// Bit `s` set: fires at second `s`. Five-field rules fire at second 0 only.
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Bits 1 to 31.
    days_of_month: u32,
    /// Bits 1 to 12.
    months: u16,
    /// Bits 0 (Sunday) to 6 (Saturday); 7 is folded into 0 at parse time.
    days_of_week: u8,
    /// The day-of-month field starts with `*` (Vixie's `DOM_STAR`).
    dom_star: bool,
    /// The day-of-week field starts with `*` (Vixie's `DOW_STAR`).
    dow_star: bool,
}

/// One cron field's name, bounds and optional names (`jan`, `mon`) for error messages and
/// parsing.
#[derive(Clone, Copy)]
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// `names[i]` stands for the value `name_base + i`.
    names: &'static [&'static str],
    name_base: u32,
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    name_base: 0,
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    name_base: 0,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    name_base: 0,
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    name_base: 0,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    name_base: 1,
};
/// 0 to 7 because POSIX and Vixie both accept 7 for Sunday.
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    name_base: 0,
};

/// Longest each month can be, February counting its 29th: a day-of-month that exceeds
/// this in every selected month can never fire.
const MAX_DAYS_IN_MONTH: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

impl Cron {
    /// Parses and validates a rule; the error names the field and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::EmptyCron);
        }
        let expanded = if trimmed.starts_with('@') {
            expand_macro(trimmed)?
        } else {
            trimmed
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => (1u64, &fields[..]),
            6 => (parse_field(SECOND, fields[0])?, &fields[1..]),
            found => {
                return Err(ScheduleError::FieldCount {
                    text: trimmed.to_string(),
                    found,
                });
            }
        };
        let days_of_week = parse_field(DAY_OF_WEEK, rest[4])?;
        // Sunday may be written 7: fold it onto 0 so matching only looks at 0..=6.
        let days_of_week = ((days_of_week | (days_of_week >> 7)) & 0x7f) as u8;
        Ok(Self {
            text: trimmed.to_string(),
            seconds,
            minutes: parse_field(MINUTE, rest[0])?,
            hours: parse_field(HOUR, rest[1])? as u32,
            days_of_month: parse_field(DAY_OF_MONTH, rest[2])? as u32,
            months: parse_field(MONTH, rest[3])? as u16,
            days_of_week,
            dom_star: rest[2].starts_with('*'),
            dow_star: rest[4].starts_with('*'),
        })
    }

    /// The rule as the operator wrote it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the rule fires at this wall-clock time (sub-second part ignored).
    pub fn matches(&self, local: NaiveDateTime) -> bool {
        self.matches_day(local.date())
            && has(self.hours.into(), local.hour())
            && has(self.minutes, local.minute())
            && has(self.seconds, local.second())
    }

    /// Whether the rule fires at some time on this date.
    pub(crate) fn matches_day(&self, date: NaiveDate) -> bool {
        if !self.matches_month(date.month()) {
            return false;
        }
        let dom = has(self.days_of_month.into(), date.day());
        let dow = has(
            self.days_of_week.into(),
            date.weekday().num_days_from_sunday(),
        );
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Whether the rule fires on some day of this month (1 to 12); lets the occurrence
    /// search skip whole months.
    pub(crate) fn matches_month(&self, month: u32) -> bool {
        has(self.months.into(), month)
    }

    /// The first second of a day, at or after `second_of_day`, at which the rule fires
    /// (day matching aside). `None` when nothing is left that day.
    pub(crate) fn next_second_of_day(&self, second_of_day: u32) -> Option<u32> {
        let (hour, minute, second) = (
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
        );
        let at = |h: u32, m: u32, s: u32| h * 3600 + m * 60 + s;
        let first_minute = next_bit(self.minutes, 0)?;
        let first_second = next_bit(self.seconds, 0)?;
        if has(self.hours.into(), hour) {
            if has(self.minutes, minute)
                && let Some(s) = next_bit(self.seconds, second)
            {
                return Some(at(hour, minute, s));
            }
            if let Some(m) = next_bit(self.minutes, minute + 1) {
                return Some(at(hour, m, first_second));
            }
        }
        let h = next_bit(self.hours.into(), hour + 1)?;
        Some(at(h, first_minute, first_second))
    }

    /// Whether some calendar date can ever match. Only false for rules such as
    /// `0 0 31 2 *` whose days of month exist in none of their months: the weekday of any
    /// valid (month, day) pair takes every value over the 400-year Gregorian cycle, and an
    /// OR rule fires on each selected weekday of each selected month.
    pub(crate) fn can_ever_fire(&self) -> bool {
        if !(self.dom_star || self.dow_star) {
            return true;
        }
        (1..=12u32).any(|month| {
            self.matches_month(month)
                && (1..=MAX_DAYS_IN_MONTH[month as usize - 1])
                    .any(|day| has(self.days_of_month.into(), day))
        })
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Cron {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Cron {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Cron {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The usual Vixie macros; `@reboot` has no meaning for a calendar and is refused.
fn expand_macro(text: &str) -> Result<&'static str, ScheduleError> {
    match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Ok("0 0 1 1 *"),
        "@monthly" => Ok("0 0 1 * *"),
        "@weekly" => Ok("0 0 * * 0"),
        "@daily" | "@midnight" => Ok("0 0 * * *"),
        "@hourly" => Ok("0 * * * *"),
        _ => Err(ScheduleError::UnknownMacro(text.to_string())),
    }
}

/// Parses one field (a comma list of `*`, `n`, `a-b`, each optionally `/step`) into a bit
/// set where bit `v` means value `v`.
fn parse_field(field: Field, text: &str) -> Result<u64, ScheduleError> {
    let invalid = |reason: String| ScheduleError::InvalidField {
        field: field.name,
        text: text.to_string(),
        reason,
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(invalid("empty item in the list".into()));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(parse_step(field, text, step)?)),
            None => (item, None),
        };
        let (start, end) = if range == "*" {
            (field.min, field.max)
        } else if let Some((start, end)) = range.split_once('-') {
            let (start, end) = (
                parse_value(field, text, start)?,
                parse_value(field, text, end)?,
            );
            if start > end {
                return Err(ScheduleError::ReversedRange {
                    field: field.name,
                    text: text.to_string(),
                    start,
                    end,
                });
            }
            (start, end)
        } else {
            let start = parse_value(field, text, range)?;
            // `5/20` means "from 5, every 20" (cronie and most crons), i.e. `5-max/20`.
            (start, if step.is_some() { field.max } else { start })
        };
        for value in (start..=end).step_by(step.unwrap_or(1) as usize) {
            bits |= 1 << value;
        }
    }
    Ok(bits)
}

/// A step is a whole number from 1 to the field's span: `*/0` would loop forever in a
/// naive cron and `*/90` on minutes is almost surely a misunderstanding (it means `0`).
fn parse_step(field: Field, text: &str, step: &str) -> Result<u32, ScheduleError> {
    let bad = |reason: &'static str| ScheduleError::InvalidStep {
        field: field.name,
        text: text.to_string(),
        step: step.to_string(),
        reason,
    };
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("is not a whole number"));
    }
    match step.parse::<u32>() {
        Ok(0) => Err(bad("must be at least 1")),
        Ok(n) if n <= field.max - field.min => Ok(n),
        _ => Err(bad("is larger than the field's range")),
    }
}

/// A number or, for months and days of week, a three-letter English name in any case.
fn parse_value(field: Field, text: &str, value: &str) -> Result<u32, ScheduleError> {
    if value.is_empty() {
        return Err(ScheduleError::InvalidField {
            field: field.name,
            text: text.to_string(),
            reason: "a range or step is missing a number".into(),
        });
    }
    let out_of_range = || ScheduleError::OutOfRange {
        field: field.name,
        text: text.to_string(),
        value: value.to_string(),
        min: field.min,
        max: field.max,
    };
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return match value.parse::<u32>() {
            Ok(n) if (field.min..=field.max).contains(&n) => Ok(n),
            _ => Err(out_of_range()),
        };
    }
    if let Some(index) = field
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(value))
    {
        return Ok(field.name_base + index as u32);
    }
    let expected = if field.names.is_empty() {
        "a number".to_string()
    } else {
        format!("a number or a name such as `{}`", field.names[1])
    };
    Err(ScheduleError::InvalidField {
        field: field.name,
        text: text.to_string(),
        reason: format!("`{value}` is not {expected}"),
    })
}

fn has(bits: u64, value: u32) -> bool {
    value < 64 && bits & (1 << value) != 0
}

/// The smallest set bit at or above `from`.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = bits >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(text: &str) -> Cron {
        Cron::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, s))
            .expect("valid test date")
    }

    /// 2024-06-03 is a Monday; days `0..7` from it run Monday to Sunday.
    fn june_2024_week_at(hour: u32, minute: u32) -> Vec<NaiveDateTime> {
        (0..7)
            .map(|d| at(2024, 6, 3 + d, hour, minute, 0))
            .collect()
    }

    fn error(text: &str) -> String {
        match Cron::parse(text) {
            Ok(c) => panic!("`{text}` should be rejected, parsed as {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn weekdays_at_six_fire_monday_to_friday_and_not_on_weekends() {
        let c = cron("0 6 * * 1-5");
        let fired: Vec<bool> = june_2024_week_at(6, 0)
            .into_iter()
            .map(|t| c.matches(t))
            .collect();
        assert_eq!(fired, [true, true, true, true, true, false, false]);
        assert!(!c.matches(at(2024, 6, 3, 6, 1, 0)));
        assert!(!c.matches(at(2024, 6, 3, 7, 0, 0)));
    }

    #[test]
    fn day_of_week_zero_and_seven_both_mean_sunday() {
        for text in ["0 6 * * 0", "0 6 * * 7", "0 6 * * sun", "0 6 * * 5-7"] {
            let c = cron(text);
            assert!(c.matches(at(2024, 6, 9, 6, 0, 0)), "{text} on Sunday");
            assert!(!c.matches(at(2024, 6, 4, 6, 0, 0)), "{text} on Tuesday");
        }
        assert_eq!(
            cron("0 6 * * 0").days_of_week,
            cron("0 6 * * 7").days_of_week
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_both_restricted_fire_on_either() {
        let c = cron("0 6 1 * 1");
        // Saturday 1 June 2024: the 1st, not a Monday.
        assert!(c.matches(at(2024, 6, 1, 6, 0, 0)));
        // Mondays 3 and 10 June: not the 1st.
        assert!(c.matches(at(2024, 6, 3, 6, 0, 0)));
        assert!(c.matches(at(2024, 6, 10, 6, 0, 0)));
        // Tuesday 4 June: neither.
        assert!(!c.matches(at(2024, 6, 4, 6, 0, 0)));
    }

    #[test]
    fn a_star_day_field_leaves_only_the_other_day_field_restricting() {
        let mondays = cron("0 6 * * 1");
        assert!(mondays.matches(at(2024, 6, 3, 6, 0, 0)));
        assert!(!mondays.matches(at(2024, 6, 1, 6, 0, 0)));
        let firsts = cron("0 6 1 * *");
        assert!(firsts.matches(at(2024, 6, 1, 6, 0, 0)));
        assert!(!firsts.matches(at(2024, 6, 3, 6, 0, 0)));
    }

    #[test]
    fn a_day_field_starting_with_a_star_step_combines_with_and_like_vixie() {
        // Odd days of the month that are also Mondays.
        let c = cron("0 6 */2 * mon");
        assert!(c.matches(at(2024, 6, 3, 6, 0, 0)));
        assert!(!c.matches(at(2024, 6, 10, 6, 0, 0)));
        assert!(!c.matches(at(2024, 6, 5, 6, 0, 0)));
    }

    #[test]
    fn every_fifteen_minutes_fires_on_the_quarter_hours_only() {
        let c = cron("*/15 * * * *");
        let fired: Vec<u32> = (0..60)
            .filter(|&m| c.matches(at(2024, 6, 3, 13, m, 0)))
            .collect();
        assert_eq!(fired, [0, 15, 30, 45]);
        assert!(!c.matches(at(2024, 6, 3, 13, 15, 1)));
    }

    #[test]
    fn a_stepped_range_fires_at_each_step_inside_the_range() {
        let c = cron("10-50/10 * * * *");
        let fired: Vec<u32> = (0..60)
            .filter(|&m| c.matches(at(2024, 6, 3, 0, m, 0)))
            .collect();
        assert_eq!(fired, [10, 20, 30, 40, 50]);
        let from_five = cron("5/20 * * * *");
        let fired: Vec<u32> = (0..60)
            .filter(|&m| from_five.matches(at(2024, 6, 3, 0, m, 0)))
            .collect();
        assert_eq!(fired, [5, 25, 45]);
    }

    #[test]
    fn lists_of_values_and_ranges_fire_on_each() {
        let c = cron("0 6,12,18-19 * * *");
        let fired: Vec<u32> = (0..24)
            .filter(|&h| c.matches(at(2024, 6, 3, h, 0, 0)))
            .collect();
        assert_eq!(fired, [6, 12, 18, 19]);
    }

    #[test]
    fn six_fields_put_seconds_first_and_every_five_seconds_fires_every_five_seconds() {
        let c = cron("*/5 * * * * *");
        let fired: Vec<u32> = (0..60)
            .filter(|&s| c.matches(at(2024, 6, 3, 13, 7, s)))
            .collect();
        assert_eq!(fired, (0..60).step_by(5).collect::<Vec<_>>());
        // Same POSIX day-of-week in the sixth field: 0 is Sunday.
        let sunday = cron("30 0 6 * * 0");
        assert!(sunday.matches(at(2024, 6, 9, 6, 0, 30)));
        assert!(!sunday.matches(at(2024, 6, 9, 6, 0, 0)));
    }

    #[test]
    fn five_field_rules_fire_at_second_zero_only() {
        let c = cron("* * * * *");
        assert!(c.matches(at(2024, 6, 3, 13, 7, 0)));
        assert!(!c.matches(at(2024, 6, 3, 13, 7, 1)));
    }

    #[test]
    fn month_and_day_names_are_accepted_in_any_case() {
        let c = cron("0 6 * JAN,jul-Aug Mon-fri");
        assert!(c.matches(at(2024, 7, 1, 6, 0, 0))); // Monday 1 July
        assert!(c.matches(at(2024, 1, 5, 6, 0, 0))); // Friday 5 January
        assert!(!c.matches(at(2024, 7, 6, 6, 0, 0))); // Saturday
        assert!(!c.matches(at(2024, 6, 3, 6, 0, 0))); // June
        assert_eq!(cron("0 0 1 dec *").months, 1 << 12);
        assert_eq!(cron("0 0 * * SAT").days_of_week, 1 << 6);
    }

    #[test]
    fn macros_expand_to_their_five_field_rules() {
        assert!(cron("@daily").matches(at(2024, 6, 3, 0, 0, 0)));
        assert!(!cron("@daily").matches(at(2024, 6, 3, 1, 0, 0)));
        assert!(cron("@hourly").matches(at(2024, 6, 3, 1, 0, 0)));
        assert!(cron("@weekly").matches(at(2024, 6, 9, 0, 0, 0)));
        assert!(cron("@Yearly").matches(at(2025, 1, 1, 0, 0, 0)));
        assert_eq!(cron("@monthly").as_str(), "@monthly");
        assert!(error("@reboot").contains("@reboot"));
    }

    #[test]
    fn the_original_text_is_kept_for_display() {
        let c = cron("  0 6 * * mon-fri ");
        assert_eq!(c.as_str(), "0 6 * * mon-fri");
        assert_eq!(c.to_string(), "0 6 * * mon-fri");
    }

    #[test]
    fn a_rule_serialises_as_its_text_and_deserialising_validates() {
        let c = cron("0 6 * * 1-5");
        let json = serde_json::to_string(&c).expect("serialises");
        assert_eq!(json, "\"0 6 * * 1-5\"");
        let back: Cron = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, c);
        let bad = serde_json::from_str::<Cron>("\"60 6 * * *\"").expect_err("minute 60");
        assert!(bad.to_string().contains("minute"), "{bad}");
    }

    #[test]
    fn a_wrong_number_of_fields_is_rejected() {
        assert!(error("0 6 * *").contains("4 fields"));
        assert!(error("0 0 6 * * * *").contains("7 fields"));
        assert_eq!(Cron::parse("   "), Err(ScheduleError::EmptyCron));
    }

    #[test]
    fn out_of_range_values_are_rejected_naming_the_field() {
        for (text, field) in [
            ("60 6 * * *", "minute"),
            ("0 24 * * *", "hour"),
            ("0 6 0 * *", "day-of-month"),
            ("0 6 32 * *", "day-of-month"),
            ("0 6 * 13 *", "month"),
            ("0 6 * 0 *", "month"),
            ("0 6 * * 8", "day-of-week"),
            ("60 0 6 * * *", "second"),
            ("0 6 * * 1-9", "day-of-week"),
            ("99999999999 6 * * *", "minute"),
        ] {
            let message = error(text);
            assert!(message.starts_with(field), "{text}: {message}");
            assert!(message.contains("out of range"), "{text}: {message}");
        }
    }

    #[test]
    fn empty_items_and_missing_numbers_are_rejected() {
        assert!(error("1,,2 6 * * *").contains("empty item"));
        assert!(error("0 6, * * *").contains("empty item"));
        assert!(error("0 6- * * *").contains("missing a number"));
        assert!(error("0 -6 * * *").contains("missing a number"));
    }

    #[test]
    fn bad_steps_are_rejected() {
        assert!(error("*/0 * * * *").contains("at least 1"));
        assert!(error("*/ * * * *").contains("not a whole number"));
        assert!(error("*/x * * * *").contains("not a whole number"));
        assert!(error("*/90 * * * *").contains("larger than"));
        assert!(error("*/5/5 * * * *").starts_with("minute"));
    }

    #[test]
    fn garbage_and_reversed_ranges_are_rejected() {
        assert!(error("abc 6 * * *").contains("`abc` is not a number"));
        assert!(error("0 6 * * monday").contains("`monday` is not a number or a name"));
        assert!(error("0 6 * * jan").starts_with("day-of-week"));
        assert!(error("0 six * * *").starts_with("hour"));
        assert!(error("0 6 * * 5-1").contains("backwards"));
        assert!(error("? 6 * * *").starts_with("minute"));
    }

    #[test]
    fn the_next_second_of_a_day_skips_to_the_next_matching_hour_minute_and_second() {
        let c = cron("10,40 30 6,18 * * *");
        assert_eq!(c.next_second_of_day(0), Some(6 * 3600 + 30 * 60 + 10));
        assert_eq!(
            c.next_second_of_day(6 * 3600 + 30 * 60 + 11),
            Some(6 * 3600 + 30 * 60 + 40)
        );
        assert_eq!(
            c.next_second_of_day(6 * 3600 + 30 * 60 + 41),
            Some(18 * 3600 + 30 * 60 + 10)
        );
        assert_eq!(c.next_second_of_day(18 * 3600 + 30 * 60 + 41), None);
        assert_eq!(c.next_second_of_day(86_400), None);
        let every = cron("* * * * * *");
        assert_eq!(every.next_second_of_day(86_399), Some(86_399));
    }

    #[test]
    fn a_day_that_exists_in_none_of_its_months_can_never_fire() {
        assert!(!cron("0 0 31 2 *").can_ever_fire());
        assert!(!cron("0 0 30,31 2 *").can_ever_fire());
        assert!(!cron("0 0 31 apr,jun,sep,nov *").can_ever_fire());
        assert!(cron("0 0 29 2 *").can_ever_fire());
        assert!(cron("0 0 31 2,3 *").can_ever_fire());
        // Both day fields restricted: Mondays of February still fire.
        assert!(cron("0 0 31 2 1").can_ever_fire());
    }

    /// Our POSIX rule in the `cron` crate's syntax, for rules where the two readings agree:
    /// seconds first (`0` prepended to five fields) and numeric days of week shifted by one
    /// (the crate counts Sunday = 1; names need no change, nor do steps).
    fn in_cron_crate_syntax(rule: &str) -> String {
        let fields: Vec<&str> = rule.split_whitespace().collect();
        if fields.len() == 1 {
            return rule.to_string(); // a macro: both read them alike
        }
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => panic!("{rule}: {n} fields"),
        };
        let mut dow = String::new();
        let mut number = String::new();
        let mut after_slash = false;
        for c in rest[4].chars().chain(std::iter::once(',')) {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            if !number.is_empty() {
                let n: u32 = number.parse().expect("a number");
                let shifted = if after_slash { n } else { n + 1 };
                dow.push_str(&shifted.to_string());
                number.clear();
            }
            after_slash = c == '/';
            dow.push(c);
        }
        dow.pop(); // the sentinel comma
        format!(
            "{seconds} {} {} {} {} {dow}",
            rest[0], rest[1], rest[2], rest[3]
        )
    }

    #[test]
    fn the_translation_to_the_cron_crate_shifts_numeric_days_of_week_only() {
        assert_eq!(in_cron_crate_syntax("0 6 * * 1-5"), "0 0 6 * * 2-6");
        assert_eq!(in_cron_crate_syntax("*/15 6 1 * 0,6"), "0 */15 6 1 * 1,7");
        assert_eq!(in_cron_crate_syntax("0 6 * * 1-5/2"), "0 0 6 * * 2-6/2");
        assert_eq!(in_cron_crate_syntax("30 0 6 * * mon"), "30 0 6 * * mon");
    }

    /// Differential test against an independent implementation, the `cron` crate, on rules
    /// whose meaning the two share: at most one of day-of-month and day-of-week restricted
    /// (or one of them starting with `*`), since the crate always ANDs them, and no
    /// day-of-week 7 (the crate's range ends at 7 = Saturday). Both walk the same 200
    /// instants in UTC.
    #[test]
    fn the_next_two_hundred_occurrences_agree_with_the_cron_crate() {
        use std::str::FromStr;

        use chrono::{DateTime, TimeDelta, TimeZone, Utc};

        use super::super::Schedule;

        let rules = [
            "0 6 * * *",
            "30 17 * * 1-5",
            "*/15 * * * *",
            "10-50/10 6-8 * * *",
            "5/20 * * * *",
            "0 6,12,18-19 * * *",
            "0 6 * JAN,jul-Aug Mon-fri",
            "0 6 * * sat,sun",
            "0 9 * * 0",
            "0 9 * * 6",
            "15 6 * 3-5 2-4",
            "0 6 * * 1-5/2",
            "0 6 * * */2",
            "0 0 1 * *",
            "0 8 1,15 * *",
            "0 22 1-7 * *",
            "0 12 15 */2 *",
            "0 6 */2 * mon",
            "0 0 29 2 *",
            "0 0 31 * *",
            "*/20 */6 * * *",
            "*/10 30 6 * * *",
            "30 0 6 * * 0",
            "0,30 */5 9-11 * * 1-5",
            "@daily",
            "@weekly",
            "@hourly",
            "@monthly",
            "@yearly",
        ];
        // A Monday morning with sub-second noise; both sides return instants strictly after.
        let from = Utc
            .with_ymd_and_hms(2024, 6, 3, 5, 59, 59)
            .single()
            .expect("valid instant")
            + TimeDelta::milliseconds(250);
        // The crate stops at 2100.
        let until = Utc
            .with_ymd_and_hms(2100, 1, 1, 0, 0, 0)
            .single()
            .expect("valid instant");
        for rule in rules {
            let ours = Schedule::new(vec![cron(rule)], chrono_tz::UTC, None, None)
                .expect("valid schedule");
            let ours: Vec<DateTime<Utc>> = ours.occurrences(from, until, 200);
            let translated = in_cron_crate_syntax(rule);
            let theirs = ::cron::Schedule::from_str(&translated)
                .unwrap_or_else(|e| panic!("{rule} as `{translated}`: {e}"));
            let theirs: Vec<DateTime<Utc>> = theirs
                .after(&from)
                .take_while(|t| *t < until)
                .take(200)
                .collect();
            assert_eq!(ours.len(), theirs.len(), "{rule} as `{translated}`");
            if let Some(i) = (0..ours.len()).find(|&i| ours[i] != theirs[i]) {
                panic!(
                    "{rule} (`{translated}`): occurrence {i} is {} for us, {} for the cron crate",
                    ours[i], theirs[i]
                );
            }
        }
    }
}
