//! The broadcast calendar (pure): cron rules with POSIX semantics, occurrences in a
//! window, quiet hours. Owns turning rules, a timezone and a date window into instants;
//! does no I/O and never reads the clock (`now` is always a parameter). The calendar
//! runner in the shell sleeps until [`Schedule::next_after`].

mod cron;
pub mod file;
mod quiet;

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveTime, Offset, TimeDelta, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;

pub use self::cron::Cron;
pub use self::quiet::QuietHours;

/// Why a rule, a timezone, a schedule or quiet hours were refused. Messages are meant for
/// operators: they name the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression is empty or blank.
    #[error("the cron expression is empty")]
    EmptyCron,
    /// The cron expression has neither 5 nor 6 whitespace-separated fields.
    #[error(
        "cron expression `{text}` has {found} fields; expected 5 (minute hour day-of-month \
         month day-of-week) or 6 (second first)"
    )]
    FieldCount {
        /// The whole expression.
        text: String,
        /// How many fields it has.
        found: usize,
    },
    /// A `@` macro other than `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
    /// `@midnight` and `@hourly` (such as `@reboot`, meaningless for a calendar).
    #[error(
        "unknown cron macro `{0}`; expected @yearly, @annually, @monthly, @weekly, @daily, \
         @midnight or @hourly"
    )]
    UnknownMacro(String),
    /// A number outside its field's range, such as minute 60, hour 24, day-of-month 0 or
    /// 32, month 13 or day-of-week 8.
    #[error("{field} field `{text}`: {value} is out of range {min}-{max}")]
    OutOfRange {
        /// Which field (`minute`, `day-of-week`...).
        field: &'static str,
        /// The whole field as written.
        text: String,
        /// The offending number as written.
        value: String,
        /// The smallest value the field accepts.
        min: u32,
        /// The largest value the field accepts.
        max: u32,
    },
    /// A step (`/n`) that is not a whole number from 1 to the field's span, such as `*/0`.
    #[error("{field} field `{text}`: step `{step}` {reason}")]
    InvalidStep {
        /// Which field.
        field: &'static str,
        /// The whole field as written.
        text: String,
        /// The step as written.
        step: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A range whose start is after its end, such as `5-1`.
    #[error("{field} field `{text}`: range {start}-{end} runs backwards")]
    ReversedRange {
        /// Which field.
        field: &'static str,
        /// The whole field as written.
        text: String,
        /// Where the range starts.
        start: u32,
        /// Where the range ends.
        end: u32,
    },
    /// Anything else a field cannot hold: garbage, an empty list item, a range or step
    /// without its number, a name in a field that has none.
    #[error("{field} field `{text}`: {reason}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// The whole field as written.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Not an IANA timezone name.
    #[error("unknown timezone `{0}`; expected an IANA name such as Asia/Ho_Chi_Minh")]
    UnknownTimezone(String),
    /// A schedule without any cron rule.
    #[error("a schedule needs at least one cron rule")]
    NoRules,
    /// A schedule whose last day comes before its first.
    #[error("the schedule ends on {ends_on}, before it starts on {starts_on}")]
    EndsBeforeStart {
        /// First day (inclusive).
        starts_on: NaiveDate,
        /// Last day (inclusive).
        ends_on: NaiveDate,
    },
    /// Quiet hours that are not `HH:MM-HH:MM` with two different times of day.
    #[error("quiet hours `{text}`: {reason}")]
    InvalidQuietHours {
        /// The value as written.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Parses an IANA timezone name such as `Asia/Ho_Chi_Minh` (exact case).
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    name.trim()
        .parse()
        .map_err(|_| ScheduleError::UnknownTimezone(name.to_string()))
}

/// The Gregorian calendar repeats exactly every 400 years (146 097 days, a whole number of
/// weeks): a rule that has not fired on any date of that span never will. This bounds the
/// search of [`Schedule::next_after`]. Ordinary rules fire within 8 years (29 February,
/// 2096 to 2104); rare AND rules such as `0 0 29 2 */7` (29 February on a Sunday) can
/// wait 40.
const GREGORIAN_CYCLE_DAYS: i64 = 146_097;

/// When a programme airs: cron rules read as wall-clock time in `timezone`, on the days
/// from `starts_on` to `ends_on` (both inclusive, dates in `timezone`, open-ended when
/// `None`).
///
/// Daylight saving time (none in Asia/Ho_Chi_Minh, but the code serves any zone): a wall
/// time skipped by a jump forward does not fire that day (unlike Vixie cron, which runs
/// it late: a programme at 02:30 is not one to air at 03:00); a wall time that happens
/// twice when clocks go back fires once, at its first instance. With that choice wall time
/// maps to instants strictly increasingly, so occurrences come out in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The rules; an instant planned by several of them is one occurrence.
    pub cron: Vec<Cron>,
    /// Where the rules' wall-clock times and the date window are read.
    pub timezone: Tz,
    /// First day (inclusive) on which the rules fire.
    pub starts_on: Option<NaiveDate>,
    /// Last day (inclusive) on which the rules fire.
    pub ends_on: Option<NaiveDate>,
}

impl Schedule {
    /// A schedule with at least one rule and a date window that does not end before it
    /// starts.
    pub fn new(
        cron: Vec<Cron>,
        timezone: Tz,
        starts_on: Option<NaiveDate>,
        ends_on: Option<NaiveDate>,
    ) -> Result<Self, ScheduleError> {
        if cron.is_empty() {
            return Err(ScheduleError::NoRules);
        }
        if let (Some(starts_on), Some(ends_on)) = (starts_on, ends_on)
            && ends_on < starts_on
        {
            return Err(ScheduleError::EndsBeforeStart { starts_on, ends_on });
        }
        Ok(Self {
            cron,
            timezone,
            starts_on,
            ends_on,
        })
    }

    /// Up to `limit` planned instants in [`from`, `to`), sorted, without duplicates.
    pub fn occurrences(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        self.occurrences_iter(from, to).take(limit).collect()
    }

    /// The first planned instant strictly after `after`: what the runner sleeps until.
    /// `None` when the rules can never fire or the date window is over. Costs one step per
    /// matching time plus one per day of a selected month until the next occurrence, and
    /// gives up after a 400-year calendar cycle.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = after.checked_add_signed(TimeDelta::nanoseconds(1))?;
        let to = after
            .checked_add_signed(TimeDelta::days(GREGORIAN_CYCLE_DAYS + 1))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.occurrences_iter(from, to).next()
    }

    /// Planned instants in [`from`, `to`), in order and without duplicates, computed lazily
    /// day by day in the schedule's timezone.
    pub fn occurrences_iter(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Occurrences<'_> {
        // Checked because `from` may sit at the edge of chrono's range, where converting
        // to local time would panic.
        let offset = self
            .timezone
            .offset_from_utc_datetime(&from.naive_utc())
            .fix();
        let local_from = from.naive_utc().checked_add_offset(offset);
        let (mut day, mut second_of_day) = local_from.map_or((NaiveDate::MAX, 0), |local| {
            (local.date(), local.time().num_seconds_from_midnight())
        });
        if let Some(starts_on) = self.starts_on.filter(|&starts_on| starts_on > day) {
            (day, second_of_day) = (starts_on, 0);
        }
        // A local date is at most one day past the UTC one (offsets stay under a day), and
        // one more day of margin: where clocks go back across midnight, wall times of the
        // next date can come before `to`. Anything at or after `to` stops the walk anyway.
        let mut last_day = to
            .date_naive()
            .checked_add_days(Days::new(2))
            .unwrap_or(NaiveDate::MAX);
        if let Some(ends_on) = self.ends_on {
            last_day = last_day.min(ends_on);
        }
        let done = from >= to || local_from.is_none() || !self.cron.iter().any(Cron::can_ever_fire);
        Occurrences {
            schedule: self,
            from,
            to,
            day,
            second_of_day,
            last_day,
            done,
        }
    }
}

/// The planned instants of a [`Schedule`] in a window, in order; see
/// [`Schedule::occurrences_iter`].
#[derive(Debug, Clone)]
pub struct Occurrences<'a> {
    schedule: &'a Schedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// The local date being walked.
    day: NaiveDate,
    /// The next wall-clock second of `day` to consider.
    second_of_day: u32,
    last_day: NaiveDate,
    done: bool,
}

impl Occurrences<'_> {
    /// Moves to the next date, skipping whole months in which no rule fires.
    fn next_day(&mut self) {
        self.second_of_day = 0;
        let month = self.day.month();
        let month_matters = self.schedule.cron.iter().any(|c| c.matches_month(month));
        let next = if month_matters {
            self.day.succ_opt()
        } else if month == 12 {
            NaiveDate::from_ymd_opt(self.day.year() + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(self.day.year(), month + 1, 1)
        };
        match next {
            Some(day) => self.day = day,
            None => self.done = true,
        }
    }
}

impl Iterator for Occurrences<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        let timezone = self.schedule.timezone;
        while !self.done {
            if self.day > self.last_day {
                self.done = true;
                break;
            }
            let (day, cursor) = (self.day, self.second_of_day);
            // The earliest wall time still ahead today across all rules: rules planning
            // the same time give one occurrence.
            let next = self
                .schedule
                .cron
                .iter()
                .filter(|c| c.matches_day(day))
                .filter_map(|c| c.next_second_of_day(cursor))
                .min();
            let Some(second_of_day) = next else {
                self.next_day();
                continue;
            };
            self.second_of_day = second_of_day + 1;
            let Some(time) = NaiveTime::from_num_seconds_from_midnight_opt(second_of_day, 0) else {
                continue;
            };
            let instant = match timezone.from_local_datetime(&day.and_time(time)) {
                LocalResult::Single(instant) => instant,
                LocalResult::Ambiguous(first, _) => first,
                // Skipped by a jump forward: does not fire (see `Schedule`).
                LocalResult::None => continue,
            }
            .with_timezone(&Utc);
            if instant < self.from {
                continue;
            }
            if instant >= self.to {
                self.done = true;
                break;
            }
            return Some(instant);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use chrono_tz::{Asia::Ho_Chi_Minh, Europe::Berlin};

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid test instant")
    }

    fn date(y: i32, mo: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, mo, d).expect("valid test date")
    }

    fn schedule(rules: &[&str], timezone: Tz) -> Schedule {
        let cron = rules
            .iter()
            .map(|r| Cron::parse(r).unwrap_or_else(|e| panic!("{r}: {e}")))
            .collect();
        Schedule::new(cron, timezone, None, None).expect("valid schedule")
    }

    #[test]
    fn six_in_the_morning_in_hanoi_is_eleven_at_night_utc_the_day_before() {
        let s = schedule(&["0 6 * * *"], Ho_Chi_Minh);
        let got = s.occurrences(utc(2024, 6, 1, 0, 0, 0), utc(2024, 6, 4, 0, 0, 0), 10);
        assert_eq!(
            got,
            [
                utc(2024, 6, 1, 23, 0, 0),
                utc(2024, 6, 2, 23, 0, 0),
                utc(2024, 6, 3, 23, 0, 0),
            ]
        );
    }

    #[test]
    fn occurrences_of_several_rules_are_merged_sorted_and_deduplicated() {
        let s = schedule(&["30 6 * * *", "0 6 * * *", "0 6 * * 1-5"], Ho_Chi_Minh);
        // Sunday 9 and Monday 10 June 2024 in Hanoi.
        let got = s.occurrences(utc(2024, 6, 8, 17, 0, 0), utc(2024, 6, 10, 17, 0, 0), 10);
        assert_eq!(
            got,
            [
                utc(2024, 6, 8, 23, 0, 0),
                utc(2024, 6, 8, 23, 30, 0),
                utc(2024, 6, 9, 23, 0, 0),
                utc(2024, 6, 9, 23, 30, 0),
            ]
        );
    }

    #[test]
    fn the_window_includes_from_and_excludes_to() {
        let s = schedule(&["0 * * * *"], chrono_tz::UTC);
        let got = s.occurrences(utc(2024, 6, 3, 6, 0, 0), utc(2024, 6, 3, 8, 0, 0), 10);
        assert_eq!(got, [utc(2024, 6, 3, 6, 0, 0), utc(2024, 6, 3, 7, 0, 0)]);
        assert!(
            s.occurrences(utc(2024, 6, 3, 8, 0, 0), utc(2024, 6, 3, 6, 0, 0), 10)
                .is_empty()
        );
    }

    #[test]
    fn occurrences_stop_at_the_limit() {
        let s = schedule(&["* * * * * *"], Berlin);
        let from = utc(2024, 6, 3, 6, 0, 0) + TimeDelta::milliseconds(250);
        let got = s.occurrences(from, utc(2025, 1, 1, 0, 0, 0), 3);
        assert_eq!(
            got,
            [
                utc(2024, 6, 3, 6, 0, 1),
                utc(2024, 6, 3, 6, 0, 2),
                utc(2024, 6, 3, 6, 0, 3),
            ]
        );
        assert!(s.occurrences(from, utc(2025, 1, 1, 0, 0, 0), 0).is_empty());
    }

    #[test]
    fn starts_on_and_ends_on_are_inclusive_dates_in_the_schedules_timezone() {
        let mut s = schedule(&["0 6 * * *"], Ho_Chi_Minh);
        s.starts_on = Some(date(2024, 6, 3));
        s.ends_on = Some(date(2024, 6, 5));
        let got = s.occurrences(utc(2024, 5, 1, 0, 0, 0), utc(2024, 7, 1, 0, 0, 0), 10);
        // 06:00 on 3, 4 and 5 June in Hanoi; the first falls on 2 June in UTC.
        assert_eq!(
            got,
            [
                utc(2024, 6, 2, 23, 0, 0),
                utc(2024, 6, 3, 23, 0, 0),
                utc(2024, 6, 4, 23, 0, 0),
            ]
        );
    }

    #[test]
    fn a_wall_time_skipped_by_the_spring_forward_jump_does_not_fire() {
        // Berlin jumps from 02:00 CET to 03:00 CEST on Sunday 31 March 2024.
        let s = schedule(&["30 2 * * *"], Berlin);
        let got = s.occurrences(utc(2024, 3, 29, 0, 0, 0), utc(2024, 4, 2, 0, 0, 0), 10);
        assert_eq!(
            got,
            [
                utc(2024, 3, 29, 1, 30, 0),
                utc(2024, 3, 30, 1, 30, 0),
                utc(2024, 4, 1, 0, 30, 0),
            ]
        );
    }

    #[test]
    fn an_ambiguous_wall_time_fires_once_at_its_first_instance() {
        // Berlin goes back from 03:00 CEST to 02:00 CET on Sunday 27 October 2024.
        let s = schedule(&["30 2 * * *"], Berlin);
        let got = s.occurrences(utc(2024, 10, 26, 0, 0, 0), utc(2024, 10, 29, 0, 0, 0), 10);
        assert_eq!(
            got,
            [
                utc(2024, 10, 26, 0, 30, 0),
                utc(2024, 10, 27, 0, 30, 0),
                utc(2024, 10, 28, 1, 30, 0),
            ]
        );
        // From between the two instances, the repeated 02:30 does not fire again.
        let between = s.next_after(utc(2024, 10, 27, 1, 0, 0));
        assert_eq!(between, Some(utc(2024, 10, 28, 1, 30, 0)));
    }

    #[test]
    fn every_half_hour_across_the_autumn_night_skips_the_repeated_hour_and_stays_in_order() {
        let s = schedule(&["*/30 * * * *"], Berlin);
        // Midnight to 05:00 local on 27 October 2024 (22:00 UTC the day before to 04:00).
        let got = s.occurrences(utc(2024, 10, 26, 22, 0, 0), utc(2024, 10, 27, 4, 0, 0), 100);
        let expected: Vec<DateTime<Utc>> = [
            (26, 22, 0),
            (26, 22, 30),
            (26, 23, 0),
            (26, 23, 30),
            (27, 0, 0),
            (27, 0, 30),
            // 01:00 to 02:00 UTC is the second 02:00-03:00 local: nothing fires.
            (27, 2, 0),
            (27, 2, 30),
            (27, 3, 0),
            (27, 3, 30),
        ]
        .into_iter()
        .map(|(d, h, m)| utc(2024, 10, d, h, m, 0))
        .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn next_after_is_strictly_after() {
        let s = schedule(&["0 6 * * *"], Ho_Chi_Minh);
        let six = utc(2024, 6, 2, 23, 0, 0);
        assert_eq!(s.next_after(six - TimeDelta::nanoseconds(1)), Some(six));
        assert_eq!(s.next_after(six), Some(utc(2024, 6, 3, 23, 0, 0)));
        assert_eq!(
            s.next_after(six + TimeDelta::milliseconds(1)),
            Some(utc(2024, 6, 3, 23, 0, 0))
        );
    }

    #[test]
    fn next_after_picks_the_earliest_rule() {
        let s = schedule(&["0 18 * * *", "0 6 * * 1", "0 12 1 1 *"], Ho_Chi_Minh);
        // Sunday 9 June 2024, 19:00 in Hanoi: next is Monday 06:00, not Monday 18:00.
        assert_eq!(
            s.next_after(utc(2024, 6, 9, 12, 0, 0)),
            Some(utc(2024, 6, 9, 23, 0, 0))
        );
    }

    #[test]
    fn next_after_finds_the_29th_of_february_years_away() {
        let s = schedule(&["0 6 29 2 *"], Ho_Chi_Minh);
        assert_eq!(
            s.next_after(utc(2024, 3, 1, 0, 0, 0)),
            Some(utc(2028, 2, 28, 23, 0, 0))
        );
        // 2100 is not a leap year: eight years without one.
        assert_eq!(
            s.next_after(utc(2096, 3, 1, 0, 0, 0)),
            Some(utc(2104, 2, 28, 23, 0, 0))
        );
    }

    #[test]
    fn next_after_finds_a_rare_and_rule_decades_away() {
        // Day-of-week starts with `*` (`*/7` is 0 and 7, Sunday), so the days combine with
        // AND: 29 February falling on a Sunday, 28 years apart, 40 across 2100 (not leap).
        let s = schedule(&["0 0 29 2 */7"], chrono_tz::UTC);
        assert_eq!(
            s.next_after(utc(2033, 1, 1, 0, 0, 0)),
            Some(utc(2060, 2, 29, 0, 0, 0))
        );
        assert_eq!(
            s.next_after(utc(2089, 1, 1, 0, 0, 0)),
            Some(utc(2128, 2, 29, 0, 0, 0))
        );
    }

    #[test]
    fn next_after_gives_none_for_a_rule_that_can_never_fire() {
        let s = schedule(&["0 0 31 2 *", "0 0 30 2 *"], Ho_Chi_Minh);
        assert_eq!(s.next_after(utc(2024, 1, 1, 0, 0, 0)), None);
        assert!(
            s.occurrences(utc(2024, 1, 1, 0, 0, 0), DateTime::<Utc>::MAX_UTC, 1)
                .is_empty()
        );
    }

    #[test]
    fn next_after_gives_none_once_the_window_is_over() {
        let mut s = schedule(&["0 6 * * *"], Ho_Chi_Minh);
        s.ends_on = Some(date(2024, 6, 5));
        assert_eq!(
            s.next_after(utc(2024, 6, 4, 0, 0, 0)),
            Some(utc(2024, 6, 4, 23, 0, 0))
        );
        assert_eq!(s.next_after(utc(2024, 6, 4, 23, 0, 0)), None);
        assert_eq!(s.next_after(utc(2030, 1, 1, 0, 0, 0)), None);
    }

    #[test]
    fn next_after_waits_for_starts_on() {
        let mut s = schedule(&["0 6 * * *"], Ho_Chi_Minh);
        s.starts_on = Some(date(2025, 1, 1));
        assert_eq!(
            s.next_after(utc(2024, 6, 4, 0, 0, 0)),
            Some(utc(2024, 12, 31, 23, 0, 0))
        );
    }

    #[test]
    fn a_schedule_needs_rules_and_a_window_that_does_not_end_before_it_starts() {
        assert_eq!(
            Schedule::new(vec![], Ho_Chi_Minh, None, None),
            Err(ScheduleError::NoRules)
        );
        let rules = vec![Cron::parse("0 6 * * *").expect("valid rule")];
        let err = Schedule::new(
            rules.clone(),
            Ho_Chi_Minh,
            Some(date(2024, 6, 5)),
            Some(date(2024, 6, 4)),
        )
        .expect_err("ends before it starts");
        assert!(err.to_string().contains("before it starts"), "{err}");
        assert!(
            Schedule::new(
                rules,
                Ho_Chi_Minh,
                Some(date(2024, 6, 5)),
                Some(date(2024, 6, 5))
            )
            .is_ok()
        );
    }

    #[test]
    fn timezones_parse_by_iana_name_and_unknown_names_are_rejected() {
        assert_eq!(parse_timezone("Asia/Ho_Chi_Minh"), Ok(Ho_Chi_Minh));
        assert_eq!(parse_timezone(" Europe/Berlin "), Ok(Berlin));
        let err = parse_timezone("Asia/Hanoi_City").expect_err("not a zone");
        assert!(err.to_string().contains("`Asia/Hanoi_City`"), "{err}");
        assert!(parse_timezone("").is_err());
    }
}
