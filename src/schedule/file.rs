//! One schedule file (`schedules/*.toml`, one campaign a file): its TOML text parsed and
//! checked into a [`ScheduleFile`], or every error found, each with the line of the
//! offending value. Pure: text in, values out. It reads no file and no clock (the default
//! timezone and `now` are parameters) and knows nothing of the HTTP API or the store; the
//! shell ([`crate::schedules_dir`]) reads the files and adds the checks that need I/O
//! (audio files, areas and clusters).
//!
//! The document is walked as a spanned TOML tree rather than deserialised with serde:
//! serde stops at the first problem, and an operator fixing a file wants them all, each
//! with its line.

use std::ops::Range;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{Cron, QuietHours, Schedule, parse_timezone};
use crate::fleet::{AreaCode, parse_name};

/// Most audio files one campaign may chain (as through the API).
pub const MAX_AUDIO: usize = 50;
/// Most cron rules one campaign may have (as through the API).
pub const MAX_RULES: usize = 32;
/// Most times the playlist may air back to back at each occurrence (as through the API).
pub const MAX_REPEAT: u32 = 100;
/// Priorities a file may give; emergencies never come from files.
pub const PRIORITIES: [&str; 4] = ["scheduled", "background", "priority", "live"];
/// What may become of an airing cut into by a higher priority.
pub const INTERRUPTIONS: [&str; 3] = ["restart", "resume", "drop"];

const TOP_KEYS: [&str; 9] = [
    "title",
    "topic",
    "audio",
    "relay",
    "targets",
    "priority",
    "repeat",
    "on_interrupt",
    "schedule",
];
const SCHEDULE_KEYS: [&str; 4] = ["cron", "timezone", "starts_on", "ends_on"];
const TARGET_KEYS: [&str; 2] = ["areas", "clusters"];
const RELAY_KEYS: [&str; 2] = ["url", "duration_s"];
/// Longest relay window from a file, as through the API: a day.
pub const MAX_RELAY_S: u32 = 86_400;

/// A campaign as one file describes it, checked as far as text alone allows.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleFile {
    /// 1 to 200 characters, trimmed.
    pub title: String,
    /// 1 to 100 characters, trimmed; `None` when the file has none (the caller picks a
    /// default, such as the campaign id).
    pub topic: Option<String>,
    /// Audio files in airing order, as written (relative to the schedule file); empty
    /// for a relay.
    pub audio: Vec<String>,
    /// A live stream relayed for a window from each occurrence, in place of `audio`.
    pub relay: Option<FileRelay>,
    pub targets: FileTargets,
    /// One of [`PRIORITIES`]; `scheduled` when absent.
    pub priority: String,
    /// 1 to [`MAX_REPEAT`]; 1 when absent.
    pub repeat: u32,
    /// One of [`INTERRUPTIONS`], if given.
    pub on_interrupt: Option<String>,
    /// The rules, timezone (the file's or the default) and date window, validated.
    pub schedule: Schedule,
    /// The rules as written (trimmed), in file order.
    pub cron_text: Vec<String>,
    /// The timezone as written; `None` when the default applies.
    pub timezone_text: Option<String>,
    /// First day (inclusive) as `YYYY-MM-DD`, if given.
    pub starts_on_text: Option<String>,
    /// Last day (inclusive) as `YYYY-MM-DD`, if given.
    pub ends_on_text: Option<String>,
    /// Where the values checked later by the shell sit, to point errors at them.
    pub lines: FileLines,
}

/// `relay = { url = "http://...", duration_s = N }`: the URL is an http:// URL (whether
/// its host is allowed is the shell's check, against the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRelay {
    pub url: String,
    pub duration_s: u32,
}

/// Where a campaign airs: areas (each with its whole subtree) and clusters. At least one
/// of the two lists is non-empty; area codes are well-formed (existence is the shell's
/// check).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTargets {
    pub areas: Vec<String>,
    pub clusters: Vec<String>,
}

/// Lines (1-based) of the values the shell checks after parsing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileLines {
    /// Of each `audio` entry, in order.
    pub audio: Vec<usize>,
    /// Of each `targets.areas` entry, in order.
    pub areas: Vec<usize>,
    /// Of each `targets.clusters` entry, in order.
    pub clusters: Vec<usize>,
    /// Of the `cron` key: a quiet-hours clash is the rules' fault as a whole.
    pub cron: usize,
    /// Of the relay's `url`, if the file relays a stream.
    pub relay: usize,
}

/// The audio files, areas and clusters a file names, each with its line: what the shell
/// checks on disk and in the store. Found even in a file with other errors, so that one
/// run of the check reports a bad cron rule and a missing audio file together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    pub audio: Vec<(String, usize)>,
    pub areas: Vec<(String, usize)>,
    pub clusters: Vec<(String, usize)>,
}

impl References {
    /// Those of a valid file.
    pub fn of(file: &ScheduleFile) -> Self {
        let with_lines = |values: &[String], lines: &[usize]| {
            values.iter().cloned().zip(lines.iter().copied()).collect()
        };
        Self {
            audio: with_lines(&file.audio, &file.lines.audio),
            areas: with_lines(&file.targets.areas, &file.lines.areas),
            clusters: with_lines(&file.targets.clusters, &file.lines.clusters),
        }
    }

    /// Best effort, in any text: the well-formed entries of `audio`, `targets.areas` and
    /// `targets.clusters`, skipping what [`ScheduleFile::parse`] reports as wrong (blank
    /// entries, entries that are not strings, malformed area codes).
    pub fn find(text: &str) -> Self {
        let lines = LineIndex::new(text);
        let (document, _) = DeTable::parse_recoverable(text);
        let strings = |value: Option<&Value<'_>>| -> Vec<(String, usize)> {
            let Some(DeValue::Array(items)) = value.map(Spanned::get_ref) else {
                return Vec::new();
            };
            items
                .iter()
                .filter_map(|item| match item.get_ref() {
                    DeValue::String(s) if !s.trim().is_empty() => {
                        Some((s.trim().to_string(), lines.line(item.span().start)))
                    }
                    _ => None,
                })
                .collect()
        };
        let document = document.get_ref();
        let targets = match document.get("targets").map(Spanned::get_ref) {
            Some(DeValue::Table(targets)) => Some(targets),
            _ => None,
        };
        let mut areas = strings(targets.and_then(|t| t.get("areas")));
        areas.retain(|(code, _)| AreaCode::parse(code).is_ok());
        Self {
            audio: strings(document.get("audio")),
            areas,
            clusters: strings(targets.and_then(|t| t.get("clusters"))),
        }
    }
}

/// One problem in a file, at the line (1-based) of the offending key or value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub line: usize,
    pub reason: String,
}

impl FileError {
    pub fn new(line: usize, reason: impl Into<String>) -> Self {
        Self {
            line,
            reason: reason.into(),
        }
    }
}

/// Sorts errors by line, keeping the order they were found in within a line.
pub fn sort_errors(errors: &mut [FileError]) {
    errors.sort_by_key(|e| e.line);
}

impl ScheduleFile {
    /// Parses and checks one file's text. `default_timezone` applies when the file's
    /// `[schedule]` has no `timezone`. On failure, every error found, sorted by line.
    pub fn parse(text: &str, default_timezone: Tz) -> Result<Self, Vec<FileError>> {
        let lines = LineIndex::new(text);
        let (document, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            // What a broken document recovers to is not worth checking further: a key on
            // a broken line would be reported missing as well.
            let mut errors: Vec<FileError> = syntax
                .iter()
                .map(|e| {
                    let line = e.span().map_or(1, |span| lines.line(span.start));
                    FileError::new(line, format!("invalid TOML: {}", e.message()))
                })
                .collect();
            // Past the first error on a line, the parser's recovery mostly reports its
            // own confusion (an unclosed array is also a missing comma, a bad value...).
            sort_errors(&mut errors);
            errors.dedup_by_key(|e| e.line);
            return Err(errors);
        }
        let mut checker = Checker {
            lines,
            errors: Vec::new(),
        };
        let file = checker.file(document.get_ref(), default_timezone);
        let mut errors = checker.errors;
        match file {
            Some(file) if errors.is_empty() => Ok(file),
            _ => {
                sort_errors(&mut errors);
                Err(errors)
            }
        }
    }

    /// The first `limit` occurrences whose airing, `length` long from its start, touches
    /// quiet hours: within `horizon` from `now`, or from the first day of the campaign
    /// when that is later (a campaign prepared months ahead is still checked over a whole
    /// `horizon` of airings). A zero `length` checks the starts only.
    pub fn quiet_hours_clashes(
        &self,
        quiet: &QuietHours,
        length: TimeDelta,
        now: DateTime<Utc>,
        horizon: TimeDelta,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        // A day early covers any timezone's offset; checking a little more is harmless.
        let first_day = self
            .schedule
            .starts_on
            .and_then(|d| d.checked_sub_days(Days::new(1)))
            .map(|d| d.and_time(NaiveTime::MIN).and_utc());
        let horizon_from = first_day.map_or(now, |first| first.max(now));
        let to = horizon_from
            .checked_add_signed(horizon)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let timezone = self.schedule.timezone;
        self.schedule
            .occurrences_iter(now, to)
            .filter(|&start| airs_in_quiet_hours(quiet, timezone, start, length))
            .take(limit)
            .collect()
    }
}

/// Whether an airing from `start` lasting `length` touches quiet hours (either end
/// included). Quiet hours begin and end on whole minutes of wall-clock time, so looking at
/// the start, every whole minute after it and the end is exact.
pub fn airs_in_quiet_hours(
    quiet: &QuietHours,
    timezone: Tz,
    start: DateTime<Utc>,
    length: TimeDelta,
) -> bool {
    let inside = |t: DateTime<Utc>| quiet.contains(t.with_timezone(&timezone).time());
    if inside(start) {
        return true;
    }
    let Some(end) = start.checked_add_signed(length.max(TimeDelta::zero())) else {
        return false;
    };
    let past_minute = TimeDelta::seconds(i64::from(start.second()))
        + TimeDelta::nanoseconds(i64::from(start.nanosecond()));
    let mut t = start - past_minute + TimeDelta::minutes(1);
    while t < end {
        if inside(t) {
            return true;
        }
        t += TimeDelta::minutes(1);
    }
    inside(end)
}

/// Byte offsets to 1-based lines.
struct LineIndex<'t> {
    text: &'t str,
    /// Offsets just past each `\n`: where lines 2, 3... start.
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    fn new(text: &'t str) -> Self {
        let starts = text
            .char_indices()
            .filter(|&(_, c)| c == '\n')
            .map(|(i, _)| i + 1)
            .collect();
        Self { text, starts }
    }

    fn line(&self, offset: usize) -> usize {
        // An error at the very end (an unclosed array) belongs to the last line that has
        // something on it, not to the empty one after the final newline.
        let offset = offset.min(self.text.trim_end().len());
        self.starts.partition_point(|&start| start <= offset) + 1
    }
}

type Value<'i> = Spanned<DeValue<'i>>;
type Key<'i> = Spanned<std::borrow::Cow<'i, str>>;

/// Walks the document, collecting errors; each method returns `None` for a value that
/// is missing or wrong (having pushed why).
struct Checker<'t> {
    lines: LineIndex<'t>,
    errors: Vec<FileError>,
}

/// The values of a table's known keys, looked up once (unknown keys reported).
struct Entries<'d, 'i> {
    found: Vec<(&'static str, &'d Key<'i>, &'d Value<'i>)>,
}

impl<'d, 'i> Entries<'d, 'i> {
    fn get(&self, name: &str) -> Option<&'d Value<'i>> {
        self.key(name).map(|(_, v)| v)
    }

    fn key(&self, name: &str) -> Option<(&'d Key<'i>, &'d Value<'i>)> {
        self.found
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, k, v)| (k, v))
    }
}

impl Checker<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        self.lines.line(span.start)
    }

    fn error(&mut self, span: Range<usize>, reason: impl Into<String>) {
        let line = self.line(span);
        self.errors.push(FileError::new(line, reason));
    }

    fn file(&mut self, document: &DeTable<'_>, default_timezone: Tz) -> Option<ScheduleFile> {
        let top = self.entries(document, "", &TOP_KEYS);
        let missing = |this: &mut Self, name: &str| {
            this.errors.push(FileError::new(
                1,
                format!("`{name}` is missing (it is required)"),
            ));
        };

        let title = match top.get("title") {
            Some(v) => self.name("title", v, 200),
            None => {
                missing(self, "title");
                None
            }
        };
        let topic = top.get("topic").map(|v| self.name("topic", v, 100));
        let relay = top.get("relay").map(|v| self.relay(v));
        let audio = match (top.get("audio"), &relay) {
            (Some(v), None) => self.audio(v),
            (Some(v), Some(_)) => {
                self.error(v.span(), "give either `audio` or `relay`, not both");
                None
            }
            (None, Some(_)) => Some((Vec::new(), Vec::new())),
            (None, None) => {
                missing(self, "audio` or `relay");
                None
            }
        };
        let targets = match top.get("targets") {
            Some(v) => self.targets(v),
            None => {
                missing(self, "targets");
                None
            }
        };
        let priority = match top.get("priority") {
            Some(v) => self.priority(v),
            None => Some("scheduled".to_string()),
        };
        let repeat = match top.get("repeat") {
            Some(v) => self.repeat(v),
            None => Some(1),
        };
        let on_interrupt = top.get("on_interrupt").map(|v| {
            self.one_of("on_interrupt", v, &INTERRUPTIONS)
                .map(str::to_string)
        });
        let schedule = match top.key("schedule") {
            Some((key, v)) => self.schedule(key, v, default_timezone),
            None => {
                missing(self, "[schedule]");
                None
            }
        };

        let (audio, audio_lines) = audio?;
        let (relay, relay_line) = match relay {
            Some(r) => {
                let (relay, line) = r?;
                (Some(relay), line)
            }
            None => (None, 0),
        };
        let (targets, area_lines, cluster_lines) = targets?;
        let parsed = self.schedule_parts(schedule?)?;
        Some(ScheduleFile {
            title: title?,
            topic: topic.flatten(),
            audio,
            relay,
            targets,
            priority: priority?,
            repeat: repeat?,
            on_interrupt: on_interrupt.flatten(),
            schedule: parsed.schedule,
            cron_text: parsed.cron_text,
            timezone_text: parsed.timezone_text,
            starts_on_text: parsed.starts_on.map(|d| d.to_string()),
            ends_on_text: parsed.ends_on.map(|d| d.to_string()),
            lines: FileLines {
                audio: audio_lines,
                areas: area_lines,
                clusters: cluster_lines,
                cron: parsed.cron_line,
                relay: relay_line,
            },
        })
    }

    /// The entries of `table` whose keys are in `known`; others are reported. `place`
    /// names the table in messages (`""` for the top level).
    fn entries<'d, 'i>(
        &mut self,
        table: &'d DeTable<'i>,
        place: &str,
        known: &[&'static str],
    ) -> Entries<'d, 'i> {
        let mut found = Vec::new();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            match known.iter().find(|k| **k == name) {
                Some(k) => found.push((*k, key, value)),
                None => {
                    let reason = unknown_key(name, place, known);
                    self.error(key.span(), reason);
                }
            }
        }
        Entries { found }
    }

    fn string<'v>(&mut self, name: &str, value: &'v Value<'_>) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                let found = other.type_str();
                self.error(
                    value.span(),
                    format!("`{name}` must be a string, not {}", article(found)),
                );
                None
            }
        }
    }

    /// An array of non-blank strings (trimmed), each with its line; every bad item is
    /// reported.
    fn strings(&mut self, name: &str, value: &Value<'_>) -> Option<Vec<(String, usize)>> {
        let DeValue::Array(items) = value.get_ref() else {
            let found = value.get_ref().type_str();
            self.error(
                value.span(),
                format!(
                    "`{name}` must be an array of strings such as [\"...\"], not {}",
                    article(found)
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(s) if !s.trim().is_empty() => {
                    out.push((s.trim().to_string(), self.line(item.span())));
                }
                DeValue::String(_) => {
                    self.error(item.span(), format!("`{name}` entry {} is blank", i + 1));
                    ok = false;
                }
                other => {
                    let found = other.type_str();
                    self.error(
                        item.span(),
                        format!(
                            "`{name}` entry {} must be a string, not {}",
                            i + 1,
                            article(found)
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn name(&mut self, name: &str, value: &Value<'_>, max: usize) -> Option<String> {
        let text = self.string(name, value)?;
        parse_name(text, max)
            .map_err(|e| self.error(value.span(), format!("`{name}` {e}")))
            .ok()
    }

    fn one_of<'k>(
        &mut self,
        name: &str,
        value: &Value<'_>,
        allowed: &[&'k str],
    ) -> Option<&'k str> {
        let text = self.string(name, value)?;
        let found = allowed.iter().find(|a| **a == text).copied();
        if found.is_none() {
            self.error(
                value.span(),
                format!(
                    "`{name}` is `{text}`; expected one of: {}",
                    allowed.join(", ")
                ),
            );
        }
        found
    }

    fn priority(&mut self, value: &Value<'_>) -> Option<String> {
        if let DeValue::String(s) = value.get_ref()
            && s.as_ref() == "emergency"
        {
            self.error(
                value.span(),
                "`priority` cannot be `emergency`: emergencies are sent when they happen, \
                 never scheduled from files",
            );
            return None;
        }
        self.one_of("priority", value, &PRIORITIES)
            .map(str::to_string)
    }

    fn repeat(&mut self, value: &Value<'_>) -> Option<u32> {
        let DeValue::Integer(n) = value.get_ref() else {
            let found = value.get_ref().type_str();
            self.error(
                value.span(),
                format!("`repeat` must be a whole number, not {}", article(found)),
            );
            return None;
        };
        match i64::from_str_radix(n.as_str(), n.radix()) {
            Ok(n) if (1..=i64::from(MAX_REPEAT)).contains(&n) => u32::try_from(n).ok(),
            _ => {
                self.error(
                    value.span(),
                    format!("`repeat` is {n}; it must be between 1 and {MAX_REPEAT}"),
                );
                None
            }
        }
    }

    /// `relay = { url, duration_s }`, with the line of its `url`.
    fn relay(&mut self, value: &Value<'_>) -> Option<(FileRelay, usize)> {
        let DeValue::Table(table) = value.get_ref() else {
            let found = value.get_ref().type_str();
            self.error(
                value.span(),
                format!(
                    "`relay` must be a table such as {{ url = \"http://...\", duration_s = 1800 }}, not {}",
                    article(found)
                ),
            );
            return None;
        };
        let entries = self.entries(table, "relay", &RELAY_KEYS);
        let url = match entries.get("url") {
            Some(v) => {
                let line = self.line(v.span());
                self.string("relay.url", v).and_then(|text| {
                    match reqwest::Url::parse(text.trim()) {
                        Ok(u) if u.scheme() == "http" && u.host_str().is_some() => {
                            Some((text.trim().to_string(), line))
                        }
                        Ok(_) => {
                            self.error(
                                v.span(),
                                "`relay.url` must be an http:// URL (https is not built in)",
                            );
                            None
                        }
                        Err(e) => {
                            self.error(
                                v.span(),
                                format!("`relay.url` `{text}` is not a URL ({e})"),
                            );
                            None
                        }
                    }
                })
            }
            None => {
                self.error(value.span(), "`relay.url` is missing (it is required)");
                None
            }
        };
        let duration = match entries.get("duration_s") {
            Some(v) => {
                match v.get_ref() {
                    DeValue::Integer(n) => match i64::from_str_radix(n.as_str(), n.radix()) {
                        Ok(n) if (1..=i64::from(MAX_RELAY_S)).contains(&n) => u32::try_from(n).ok(),
                        _ => {
                            self.error(
                            v.span(),
                            format!("`relay.duration_s` is {n}; it must be between 1 and {MAX_RELAY_S}"),
                        );
                            None
                        }
                    },
                    other => {
                        let found = other.type_str();
                        self.error(
                            v.span(),
                            format!(
                                "`relay.duration_s` must be a whole number of seconds, not {}",
                                article(found)
                            ),
                        );
                        None
                    }
                }
            }
            None => {
                self.error(
                    value.span(),
                    "`relay.duration_s` is missing (it is required)",
                );
                None
            }
        };
        let ((url, line), duration_s) = (url?, duration?);
        Some((FileRelay { url, duration_s }, line))
    }

    fn audio(&mut self, value: &Value<'_>) -> Option<(Vec<String>, Vec<usize>)> {
        let items = self.strings("audio", value)?;
        if items.is_empty() || items.len() > MAX_AUDIO {
            self.error(
                value.span(),
                format!("`audio` must list 1 to {MAX_AUDIO} files"),
            );
            return None;
        }
        Some(items.into_iter().unzip())
    }

    fn targets(&mut self, value: &Value<'_>) -> Option<(FileTargets, Vec<usize>, Vec<usize>)> {
        let DeValue::Table(table) = value.get_ref() else {
            let found = value.get_ref().type_str();
            self.error(
                value.span(),
                format!(
                    "`targets` must be a table such as {{ areas = [\"...\"] }}, not {}",
                    article(found)
                ),
            );
            return None;
        };
        let entries = self.entries(table, "targets", &TARGET_KEYS);
        let areas = entries
            .get("areas")
            .map(|v| self.strings("targets.areas", v));
        let clusters = entries
            .get("clusters")
            .map(|v| self.strings("targets.clusters", v));
        let (areas, clusters) = (
            areas.unwrap_or(Some(vec![]))?,
            clusters.unwrap_or(Some(vec![]))?,
        );
        let mut ok = true;
        for (code, line) in &areas {
            if let Err(e) = AreaCode::parse(code) {
                self.errors
                    .push(FileError::new(*line, format!("area code `{code}`: {e}")));
                ok = false;
            }
        }
        if areas.is_empty() && clusters.is_empty() {
            self.error(
                value.span(),
                "`targets` must name at least one area (`areas`) or cluster (`clusters`)",
            );
            return None;
        }
        let (areas, area_lines) = areas.into_iter().unzip();
        let (clusters, cluster_lines) = clusters.into_iter().unzip();
        ok.then_some((FileTargets { areas, clusters }, area_lines, cluster_lines))
    }

    fn schedule(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        default_timezone: Tz,
    ) -> Option<ScheduleParts> {
        let DeValue::Table(table) = value.get_ref() else {
            let found = value.get_ref().type_str();
            self.error(
                value.span(),
                format!(
                    "`schedule` must be a table ([schedule]), not {}",
                    article(found)
                ),
            );
            return None;
        };
        let entries = self.entries(table, "schedule", &SCHEDULE_KEYS);
        let rules = match entries.key("cron") {
            Some((cron_key, v)) => self
                .rules(v)
                .map(|rules| (rules, self.line(cron_key.span()))),
            None => {
                self.error(
                    key.span(),
                    "`cron` is missing from [schedule] (it is required)",
                );
                None
            }
        };
        let timezone = match entries.get("timezone") {
            Some(v) => self.string("timezone", v).and_then(|name| {
                parse_timezone(name)
                    .map(|tz| (tz, Some(name.trim().to_string())))
                    .map_err(|e| self.error(v.span(), e.to_string()))
                    .ok()
            }),
            None => Some((default_timezone, None)),
        };
        let starts_on = entries.get("starts_on").map(|v| self.date("starts_on", v));
        let ends_on = entries.get("ends_on").map(|v| self.date("ends_on", v));
        let (Some(starts_on), Some(ends_on)) = (
            starts_on.unwrap_or(Some(None)),
            ends_on.unwrap_or(Some(None)),
        ) else {
            return None;
        };
        if let (Some(first), Some(last)) = (starts_on, ends_on)
            && last < first
            && let Some(v) = entries.get("ends_on")
        {
            self.error(
                v.span(),
                format!("`ends_on` ({last}) is before `starts_on` ({first})"),
            );
            return None;
        }
        let ((rules, cron_line), (timezone, timezone_text)) = (rules?, timezone?);
        Some(ScheduleParts {
            rules,
            cron_line,
            timezone,
            timezone_text,
            starts_on,
            ends_on,
        })
    }

    fn rules(&mut self, value: &Value<'_>) -> Option<Vec<Cron>> {
        let items = self.strings("cron", value)?;
        if items.is_empty() || items.len() > MAX_RULES {
            self.error(
                value.span(),
                format!("`cron` must list 1 to {MAX_RULES} rules"),
            );
            return None;
        }
        let mut rules = Vec::new();
        let mut ok = true;
        for (text, line) in items {
            match Cron::parse(&text) {
                Ok(rule) if rule.can_ever_fire() => rules.push(rule),
                Ok(_) => {
                    self.errors.push(FileError::new(
                        line,
                        format!(
                            "cron `{text}` can never fire: none of its days of the month \
                             exist in its months"
                        ),
                    ));
                    ok = false;
                }
                Err(e) => {
                    self.errors
                        .push(FileError::new(line, format!("cron `{text}`: {e}")));
                    ok = false;
                }
            }
        }
        ok.then_some(rules)
    }

    /// `"2026-12-01"`, or the TOML date `2026-12-01` written without quotes. `Some(None)`
    /// never comes out of here; the `Option<Option<_>>` shape is the caller's.
    fn date(&mut self, name: &str, value: &Value<'_>) -> Option<Option<NaiveDate>> {
        let text = match value.get_ref() {
            DeValue::String(s) => s.trim().to_string(),
            DeValue::Datetime(d) => d.to_string(),
            other => {
                let found = other.type_str();
                self.error(
                    value.span(),
                    format!(
                        "`{name}` must be a date such as \"2026-12-01\", not {}",
                        article(found)
                    ),
                );
                return None;
            }
        };
        match NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
            Ok(date) => Some(Some(date)),
            Err(_) => {
                self.error(
                    value.span(),
                    format!("`{name}` is `{text}`, not a date (YYYY-MM-DD)"),
                );
                None
            }
        }
    }

    fn schedule_parts(&mut self, parts: ScheduleParts) -> Option<ParsedSchedule> {
        let ScheduleParts {
            rules,
            cron_line,
            timezone,
            timezone_text,
            starts_on,
            ends_on,
        } = parts;
        let cron_text = rules.iter().map(|r| r.as_str().to_string()).collect();
        match Schedule::new(rules, timezone, starts_on, ends_on) {
            Ok(schedule) => Some(ParsedSchedule {
                schedule,
                cron_text,
                cron_line,
                timezone_text,
                starts_on,
                ends_on,
            }),
            Err(e) => {
                // Unreachable after the checks above, but the calendar has the last word.
                self.errors.push(FileError::new(cron_line, e.to_string()));
                None
            }
        }
    }
}

/// The `[schedule]` table, each part valid on its own.
struct ScheduleParts {
    rules: Vec<Cron>,
    cron_line: usize,
    timezone: Tz,
    timezone_text: Option<String>,
    starts_on: Option<NaiveDate>,
    ends_on: Option<NaiveDate>,
}

struct ParsedSchedule {
    schedule: Schedule,
    cron_text: Vec<String>,
    cron_line: usize,
    timezone_text: Option<String>,
    starts_on: Option<NaiveDate>,
    ends_on: Option<NaiveDate>,
}

/// Names an unknown key and, for the usual slips, where it belongs. The classic one: a
/// top-level key written after `[schedule]` lands inside that table.
fn unknown_key(name: &str, place: &str, known: &[&str]) -> String {
    let within = if place.is_empty() {
        String::new()
    } else {
        format!(" in [{place}]")
    };
    let hint = if place == "schedule" && TOP_KEYS.contains(&name) {
        format!(
            "; `{name}` belongs at the top, before [schedule] (keys after a [table] line go \
             into that table)"
        )
    } else if place.is_empty() && SCHEDULE_KEYS.contains(&name) {
        format!("; `{name}` belongs in the [schedule] table")
    } else if place.is_empty() && TARGET_KEYS.contains(&name) {
        format!("; write it as targets = {{ {name} = [...] }}")
    } else {
        format!("; expected one of: {}", known.join(", "))
    };
    format!("unknown key `{name}`{within}{hint}")
}

fn article(type_name: &str) -> String {
    match type_name {
        "integer" | "array" => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use chrono_tz::{Asia::Ho_Chi_Minh, UTC};

    use super::*;

    const VALID: &str = r#"# A comment
title = "Tuyên truyền chuyển đổi số"
topic = "chuyen-doi-so"
audio = ["announcements/chuyen-doi-so.mp3"]
targets = { areas = ["xa-vinh-hoa"] }
priority = "scheduled"

[schedule]
cron = ["0 6 * * *", "0 17 * * *"]
timezone = "Asia/Ho_Chi_Minh"
starts_on = "2026-12-01"
ends_on = "2026-12-31"
"#;

    fn parse(text: &str) -> Result<ScheduleFile, Vec<FileError>> {
        ScheduleFile::parse(text, Ho_Chi_Minh)
    }

    fn errors(text: &str) -> Vec<FileError> {
        match parse(text) {
            Ok(file) => panic!("should be refused, parsed as {file:?}"),
            Err(errors) => errors,
        }
    }

    /// The single error of `text`, as (line, reason).
    fn error(text: &str) -> (usize, String) {
        let errors = errors(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        (errors[0].line, errors[0].reason.clone())
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("valid test instant")
    }

    fn minimal(schedule: &str) -> String {
        format!(
            "title = \"t\"\naudio = [\"a.mp3\"]\ntargets = {{ areas = [\"x\"] }}\n[schedule]\n{schedule}\n"
        )
    }

    const RELAY: &str = r#"title = "Tiếp sóng Đài TNVN"
relay = { url = "http://radio.example.vn:8000/vov1.mp3", duration_s = 1800 }
targets = { areas = ["xa-vinh-hoa"] }
priority = "live"
[schedule]
cron = ["30 5 * * *"]
"#;

    #[test]
    fn a_relay_stands_in_for_the_audio() {
        let file = parse(RELAY).expect("valid");
        assert_eq!(
            file.relay,
            Some(FileRelay {
                url: "http://radio.example.vn:8000/vov1.mp3".into(),
                duration_s: 1800
            })
        );
        assert!(file.audio.is_empty());
        assert_eq!(file.lines.relay, 2);
        // Not both, and not neither.
        let both = RELAY.replace("targets =", "audio = [\"a.mp3\"]\ntargets =");
        let (line, reason) = error(&both);
        assert_eq!(line, 3);
        assert!(reason.contains("either `audio` or `relay`"), "{reason}");
        let neither = RELAY.replace(
            "relay = { url = \"http://radio.example.vn:8000/vov1.mp3\", duration_s = 1800 }\n",
            "",
        );
        let (_, reason) = error(&neither);
        assert!(reason.contains("`audio` or `relay` is missing"), "{reason}");
    }

    #[test]
    fn a_bad_relay_is_refused_at_its_line() {
        for (relay, expected) in [
            (
                r#"{ url = "https://radio.example.vn/vov1", duration_s = 60 }"#,
                "http://",
            ),
            (r#"{ url = "radio", duration_s = 60 }"#, "is not a URL"),
            (
                r#"{ url = "http://radio.example.vn/vov1", duration_s = 0 }"#,
                "between 1 and 86400",
            ),
            (
                r#"{ url = "http://radio.example.vn/vov1", duration_s = "1800" }"#,
                "whole number",
            ),
            (
                r#"{ url = "http://radio.example.vn/vov1" }"#,
                "`relay.duration_s` is missing",
            ),
            (
                r#"{ url = "http://radio.example.vn/vov1", duration_s = 60, gain = 3 }"#,
                "gain",
            ),
            ("\"http://radio.example.vn/vov1\"", "must be a table"),
        ] {
            let text = RELAY.replace(
                r#"{ url = "http://radio.example.vn:8000/vov1.mp3", duration_s = 1800 }"#,
                relay,
            );
            let (line, reason) = error(&text);
            assert_eq!(line, 2, "{relay}: {reason}");
            assert!(reason.contains(expected), "{relay}: {reason}");
        }
    }

    #[test]
    fn the_documented_example_parses_with_every_field() {
        let file = parse(VALID).expect("valid");
        assert_eq!(file.title, "Tuyên truyền chuyển đổi số");
        assert_eq!(file.topic.as_deref(), Some("chuyen-doi-so"));
        assert_eq!(file.audio, ["announcements/chuyen-doi-so.mp3"]);
        assert_eq!(file.targets.areas, ["xa-vinh-hoa"]);
        assert!(file.targets.clusters.is_empty());
        assert_eq!(file.priority, "scheduled");
        assert_eq!(file.repeat, 1);
        assert_eq!(file.on_interrupt, None);
        assert_eq!(file.cron_text, ["0 6 * * *", "0 17 * * *"]);
        assert_eq!(file.timezone_text.as_deref(), Some("Asia/Ho_Chi_Minh"));
        assert_eq!(file.starts_on_text.as_deref(), Some("2026-12-01"));
        assert_eq!(file.ends_on_text.as_deref(), Some("2026-12-31"));
        assert_eq!(file.schedule.timezone, Ho_Chi_Minh);
        assert_eq!(
            file.lines,
            FileLines {
                audio: vec![4],
                areas: vec![5],
                clusters: vec![],
                cron: 9,
                relay: 0,
            }
        );
        // 06:00 on 1 December in Hanoi is 23:00 UTC the day before.
        assert_eq!(
            file.schedule.next_after(utc(2026, 1, 1, 0, 0)),
            Some(utc(2026, 11, 30, 23, 0))
        );
    }

    #[test]
    fn the_shipped_example_file_parses() {
        let text = include_str!("../../schedules/example-chuyen-doi-so.toml");
        let file = parse(text).expect("the example is valid");
        assert_eq!(file.targets.areas, ["xa-vinh-hoa"]);
    }

    #[test]
    fn defaults_fill_priority_repeat_and_timezone() {
        let file = ScheduleFile::parse(&minimal("cron = [\"0 6 * * *\"]"), UTC).expect("valid");
        assert_eq!(file.priority, "scheduled");
        assert_eq!(file.repeat, 1);
        assert_eq!(file.topic, None);
        assert_eq!(file.schedule.timezone, UTC);
        assert_eq!(file.timezone_text, None);
        assert_eq!(
            (file.schedule.starts_on, file.schedule.ends_on),
            (None, None)
        );
    }

    #[test]
    fn optional_fields_are_read_when_given() {
        let text = r#"
title = "t"
audio = ["a.mp3", "sub/b.wav"]
targets = { clusters = ["c1", "c2"] }
priority = "background"
repeat = 3
on_interrupt = "resume"
[schedule]
cron = ["*/30 * * * *"]
starts_on = 2026-12-01
"#;
        let file = parse(text).expect("valid");
        assert_eq!(file.audio, ["a.mp3", "sub/b.wav"]);
        assert_eq!(file.lines.audio, [3, 3]);
        assert_eq!(file.targets.clusters, ["c1", "c2"]);
        assert_eq!(file.lines.clusters, [4, 4]);
        assert_eq!(file.priority, "background");
        assert_eq!(file.repeat, 3);
        assert_eq!(file.on_interrupt.as_deref(), Some("resume"));
        // An unquoted TOML date is a date too.
        assert_eq!(file.starts_on_text.as_deref(), Some("2026-12-01"));
    }

    #[test]
    fn a_bad_cron_rule_is_reported_on_its_own_line() {
        let text = minimal("cron = [\n  \"0 6 * * *\",\n  \"0 25 * * *\",\n]");
        let (line, reason) = error(&text);
        assert_eq!(line, 7);
        assert!(reason.contains("`0 25 * * *`"), "{reason}");
        assert!(reason.contains("hour"), "{reason}");
    }

    #[test]
    fn a_rule_that_can_never_fire_is_refused() {
        let (line, reason) = error(&minimal("cron = [\"0 0 31 2 *\"]"));
        assert_eq!(line, 5);
        assert!(reason.contains("never fire"), "{reason}");
    }

    #[test]
    fn an_unknown_key_is_named_at_its_line() {
        let text = VALID.replace("priority = \"scheduled\"", "priorty = \"scheduled\"");
        let (line, reason) = error(&text);
        assert_eq!(line, 6);
        assert!(reason.contains("unknown key `priorty`"), "{reason}");
    }

    #[test]
    fn a_top_level_key_after_the_schedule_table_is_explained() {
        let text = format!("{VALID}repeat = 2\n");
        let (line, reason) = error(&text);
        assert_eq!(line, 13);
        assert!(reason.contains("in [schedule]"), "{reason}");
        assert!(reason.contains("before [schedule]"), "{reason}");
    }

    #[test]
    fn unknown_keys_inside_targets_and_schedule_are_refused() {
        let text = VALID
            .replace("areas = [", "area = [")
            .replace("timezone =", "tz =");
        let errors = errors(&text);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [5, 5, 10], "{errors:?}");
        assert!(
            errors[0].reason.contains("`area` in [targets]"),
            "{errors:?}"
        );
        assert!(errors[1].reason.contains("at least one area"), "{errors:?}");
        assert!(
            errors[2].reason.contains("`tz` in [schedule]"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_bad_timezone_is_reported_at_its_line() {
        let text = VALID.replace("Asia/Ho_Chi_Minh", "Asia/Hanoi");
        let (line, reason) = error(&text);
        assert_eq!(line, 10);
        assert!(reason.contains("`Asia/Hanoi`"), "{reason}");
    }

    #[test]
    fn bad_dates_and_a_window_that_ends_before_it_starts_are_refused() {
        let (line, reason) = error(&VALID.replace("2026-12-31", "2026-13-01"));
        assert_eq!(line, 12);
        assert!(reason.contains("not a date"), "{reason}");
        let (line, reason) = error(&VALID.replace("2026-12-31", "2026-11-30"));
        assert_eq!(line, 12);
        assert!(reason.contains("before `starts_on`"), "{reason}");
        let (line, reason) = error(&VALID.replace("\"2026-12-01\"", "20261201"));
        assert_eq!(line, 11);
        assert!(reason.contains("not an integer"), "{reason}");
    }

    #[test]
    fn priority_repeat_and_on_interrupt_are_checked() {
        let (line, reason) = error(&VALID.replace("\"scheduled\"", "\"urgent\""));
        assert_eq!(line, 6);
        assert!(
            reason.contains("scheduled, background, priority, live"),
            "{reason}"
        );
        let (_, reason) = error(&VALID.replace("\"scheduled\"", "\"emergency\""));
        assert!(reason.contains("emergencies"), "{reason}");
        let (line, reason) = error(&VALID.replace("priority = \"scheduled\"", "repeat = 0"));
        assert_eq!(line, 6);
        assert!(reason.contains("between 1 and 100"), "{reason}");
        let (_, reason) = error(&VALID.replace("priority = \"scheduled\"", "repeat = 1.5"));
        assert!(reason.contains("whole number"), "{reason}");
        let (_, reason) =
            error(&VALID.replace("priority = \"scheduled\"", "on_interrupt = \"pause\""));
        assert!(reason.contains("restart, resume, drop"), "{reason}");
    }

    #[test]
    fn empty_audio_and_targets_are_refused() {
        let (line, reason) = error(&VALID.replace("[\"announcements/chuyen-doi-so.mp3\"]", "[]"));
        assert_eq!(line, 4);
        assert!(reason.contains("1 to 50"), "{reason}");
        let (line, reason) = error(&VALID.replace("{ areas = [\"xa-vinh-hoa\"] }", "{}"));
        assert_eq!(line, 5);
        assert!(reason.contains("at least one"), "{reason}");
        let (line, reason) = error(&VALID.replace("\"announcements/chuyen-doi-so.mp3\"", "\" \""));
        assert_eq!(line, 4);
        assert!(reason.contains("blank"), "{reason}");
        let (_, reason) = error(&VALID.replace("[\"xa-vinh-hoa\"]", "[\"Xã Vĩnh Hòa\"]"));
        assert!(reason.contains("area code `Xã Vĩnh Hòa`"), "{reason}");
    }

    #[test]
    fn missing_required_keys_are_each_named() {
        let errors = errors("topic = \"x\"\n");
        let reasons: Vec<&str> = errors.iter().map(|e| e.reason.as_str()).collect();
        for key in ["`title`", "`audio`", "`targets`", "`[schedule]`"] {
            assert!(
                reasons.iter().any(|r| r.contains(key)),
                "{key}: {reasons:?}"
            );
        }
        let (line, reason) = error(&minimal("timezone = \"UTC\""));
        assert_eq!(line, 4);
        assert!(reason.contains("`cron` is missing"), "{reason}");
    }

    #[test]
    fn wrong_types_are_named() {
        let (line, reason) = error(&VALID.replace("\"Tuyên truyền chuyển đổi số\"", "42"));
        assert_eq!(line, 2);
        assert!(
            reason.contains("`title` must be a string, not an integer"),
            "{reason}"
        );
        let (_, reason) = error(&minimal("cron = \"0 6 * * *\""));
        assert!(reason.contains("array of strings"), "{reason}");
        let (_, reason) = error(&VALID.replace("{ areas = [\"xa-vinh-hoa\"] }", "\"xa-vinh-hoa\""));
        assert!(reason.contains("`targets` must be a table"), "{reason}");
    }

    #[test]
    fn every_error_of_a_file_is_reported_sorted_by_line() {
        let text = VALID
            .replace("\"scheduled\"", "\"sometimes\"")
            .replace("\"0 17 * * *\"", "\"0 17 * *\"")
            .replace("Asia/Ho_Chi_Minh", "Mars/Olympus")
            .replace("topic =", "subject =");
        let lines: Vec<usize> = errors(&text).iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 6, 9, 10]);
    }

    #[test]
    fn syntax_errors_are_reported_at_their_line() {
        let (line, reason) = error("title = \"t\"\naudio = [\"a.mp3\"\ntargets = 3\n");
        assert!((2..=3).contains(&line), "{line}");
        assert!(reason.starts_with("invalid TOML"), "{reason}");
        let errors = errors("title = \"t\"\ntitle = \"u\"\n");
        assert_eq!(errors[0].line, 2);
        assert!(errors[0].reason.contains("duplicate key"), "{errors:?}");
    }

    #[test]
    fn lines_count_from_one_and_an_error_at_the_end_stays_on_the_last_line() {
        let index = LineIndex::new("a\nbb\n\n");
        assert_eq!(index.line(0), 1);
        assert_eq!(index.line(1), 1);
        assert_eq!(index.line(2), 2);
        assert_eq!(index.line(6), 2);
    }

    #[test]
    fn an_airing_that_runs_into_quiet_hours_clashes_even_if_it_starts_before() {
        let quiet = QuietHours::parse("22:00-05:00")
            .expect("valid")
            .expect("some");
        let start = utc(2024, 6, 3, 21, 50);
        assert!(!airs_in_quiet_hours(
            &quiet,
            UTC,
            start,
            TimeDelta::minutes(9)
        ));
        assert!(airs_in_quiet_hours(
            &quiet,
            UTC,
            start,
            TimeDelta::minutes(10)
        ));
        assert!(airs_in_quiet_hours(&quiet, UTC, start, TimeDelta::hours(9)));
        // Ending on the first quiet minute is touching it.
        let late = start + TimeDelta::seconds(30);
        assert!(!airs_in_quiet_hours(
            &quiet,
            UTC,
            late,
            TimeDelta::seconds(569)
        ));
        assert!(airs_in_quiet_hours(
            &quiet,
            UTC,
            late,
            TimeDelta::seconds(570)
        ));
        // A short window in the middle of a long airing.
        let lunch = QuietHours::parse("12:00-12:01")
            .expect("valid")
            .expect("some");
        let noon = utc(2024, 6, 3, 11, 0) + TimeDelta::seconds(30);
        assert!(airs_in_quiet_hours(&lunch, UTC, noon, TimeDelta::hours(2)));
        assert!(airs_in_quiet_hours(
            &quiet,
            UTC,
            utc(2024, 6, 3, 4, 59),
            TimeDelta::zero()
        ));
        assert!(!airs_in_quiet_hours(
            &quiet,
            UTC,
            utc(2024, 6, 3, 5, 0),
            TimeDelta::hours(16)
        ));
    }

    #[test]
    fn quiet_hours_clashes_list_the_first_offending_airings() {
        let text = minimal("cron = [\"0 6 * * *\", \"0 23 * * *\"]\ntimezone = \"UTC\"");
        let file = parse(&text).expect("valid");
        let quiet = QuietHours::parse("22:00-05:00")
            .expect("valid")
            .expect("some");
        let now = utc(2024, 6, 3, 12, 0);
        let clashes =
            file.quiet_hours_clashes(&quiet, TimeDelta::zero(), now, TimeDelta::days(366), 2);
        assert_eq!(clashes, [utc(2024, 6, 3, 23, 0), utc(2024, 6, 4, 23, 0)]);
        // A 06:00 programme of 16 hours runs into 22:00.
        let file = parse(&minimal("cron = [\"0 6 * * *\"]\ntimezone = \"UTC\"")).expect("valid");
        assert!(
            file.quiet_hours_clashes(&quiet, TimeDelta::hours(15), now, TimeDelta::days(366), 2)
                .is_empty()
        );
        assert_eq!(
            file.quiet_hours_clashes(&quiet, TimeDelta::hours(16), now, TimeDelta::days(366), 1),
            [utc(2024, 6, 4, 6, 0)]
        );
    }

    #[test]
    fn a_campaign_starting_beyond_the_horizon_is_still_checked_from_its_first_day() {
        let text =
            minimal("cron = [\"0 23 * * *\"]\ntimezone = \"UTC\"\nstarts_on = \"2030-01-01\"");
        let file = parse(&text).expect("valid");
        let quiet = QuietHours::parse("22:00-05:00")
            .expect("valid")
            .expect("some");
        let clashes = file.quiet_hours_clashes(
            &quiet,
            TimeDelta::zero(),
            utc(2024, 6, 3, 12, 0),
            TimeDelta::days(366),
            1,
        );
        assert_eq!(clashes, [utc(2030, 1, 1, 23, 0)]);
    }
}
