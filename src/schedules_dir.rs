//! The schedules directory (shell): reads `schedules/*.toml`, one campaign a file, parses
//! each with [`crate::schedule::file`] and adds the checks that need I/O: every audio file
//! exists and decodes (its length feeds the quiet-hours check), and, given the store, every
//! target area and cluster exists. Used by `loaxa schedules check` and by the daemon at
//! start and on SIGHUP. Reads only; writes nothing, and knows nothing of HTTP.
//!
//! Decoding is CPU work: the daemon calls [`read_dir`] on a blocking thread.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::Config;
use crate::media::{DecodeError, DecodeLimits, decode_file};
use crate::schedule::QuietHours;
use crate::schedule::file::{FileError, References, ScheduleFile, sort_errors};
use crate::store::{Store, StoreError};

/// Campaign ids of file campaigns start with this; the rest is the file's stem.
pub const CAMPAIGN_ID_PREFIX: &str = "file:";
/// How far ahead airings are checked against quiet hours: a year, as for campaigns made
/// through the API.
pub const QUIET_HOURS_HORIZON: TimeDelta = TimeDelta::days(366);
/// Offending local times listed in a quiet-hours error.
const QUIET_EXAMPLES: usize = 5;

/// What a directory of schedule files holds: one report per `*.toml` file, sorted by
/// file name.
#[derive(Debug, Clone)]
pub struct DirReport {
    pub dir: PathBuf,
    pub files: Vec<FileReport>,
}

/// One file: its campaign, its errors, or both (a file that parses but whose audio is
/// missing keeps its parsed form, so later checks can still report on it).
#[derive(Debug, Clone)]
pub struct FileReport {
    /// `dir` joined with the file name, as errors name it.
    pub path: PathBuf,
    /// `file:<stem>`; see [`campaign_id`].
    pub id: String,
    /// The campaign, when the text parsed.
    pub parsed: Option<LoadedFile>,
    /// Every error found, sorted by line. Empty: the campaign is valid.
    pub errors: Vec<FileError>,
    /// The areas and clusters to look up in the store (also of a file with errors).
    references: References,
}

/// A parsed schedule file with its audio resolved on disk.
#[derive(Debug, Clone)]
pub struct LoadedFile {
    /// `file:<stem>`.
    pub id: String,
    /// The schedule file, as [`FileReport::path`].
    pub path: PathBuf,
    pub file: ScheduleFile,
    /// `file.audio` resolved relative to the schedule file's directory, in order.
    pub audio: Vec<AudioFile>,
}

/// One audio file of a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFile {
    pub path: PathBuf,
    /// Its length; `None` when it could not be decoded (the file then has an error).
    pub duration_ms: Option<u64>,
}

impl DirReport {
    /// The valid campaigns, in file-name order: what the daemon syncs into the store.
    pub fn campaigns(&self) -> impl Iterator<Item = &LoadedFile> {
        self.files.iter().filter_map(FileReport::campaign)
    }

    /// Errors over all files.
    pub fn error_count(&self) -> usize {
        self.files.iter().map(|f| f.errors.len()).sum()
    }

    /// Whether every file is a valid campaign.
    pub fn is_valid(&self) -> bool {
        self.files.iter().all(|f| f.errors.is_empty())
    }
}

impl FileReport {
    /// A file whose text could not be read.
    fn unread(path: &Path, error: FileError) -> Self {
        Self {
            path: path.to_path_buf(),
            id: campaign_id(path).unwrap_or_default(),
            parsed: None,
            errors: vec![error],
            references: References::default(),
        }
    }

    /// The campaign, if the file has no error at all.
    pub fn campaign(&self) -> Option<&LoadedFile> {
        self.parsed.as_ref().filter(|_| self.errors.is_empty())
    }
}

impl LoadedFile {
    /// The file's topic, or its stem when it has none (the airtime report groups by
    /// topic, and the store needs one).
    pub fn topic(&self) -> &str {
        self.file
            .topic
            .as_deref()
            .unwrap_or_else(|| self.id.trim_start_matches(CAMPAIGN_ID_PREFIX))
    }

    /// The length of one airing: a relay's window, or every item, the gaps between them,
    /// `repeat` times. Items whose length is unknown count as zero.
    pub fn programme_length(&self, gap_ms: u32) -> TimeDelta {
        if let Some(relay) = &self.file.relay {
            return TimeDelta::seconds(i64::from(relay.duration_s));
        }
        let items: u64 = self.audio.iter().filter_map(|a| a.duration_ms).sum();
        let repeat = u64::from(self.file.repeat);
        let gaps = (self.audio.len() as u64 * repeat).saturating_sub(1) * u64::from(gap_ms);
        let ms = items.saturating_mul(repeat).saturating_add(gaps);
        TimeDelta::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// The campaign id of the schedule file at `path`: `file:<stem>`, stable as long as the
/// file keeps its name. `None` when the name has no UTF-8 stem.
pub fn campaign_id(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    Some(format!("{CAMPAIGN_ID_PREFIX}{stem}"))
}

/// Whether `id` names a file campaign (the API keeps those read-only).
pub fn is_file_campaign(id: &str) -> bool {
    id.starts_with(CAMPAIGN_ID_PREFIX)
}

/// Reads every `*.toml` file of `dir` (not recursive; hidden files and editor lock files
/// skipped), sorted by name, and checks each: its text, its audio files (they must exist
/// and decode within `audio.max_duration_s`) and, with the configured quiet hours, every
/// airing of the coming year from `now` (its whole length). Areas and clusters need the
/// store: see [`check_targets`].
///
/// Fails only when the directory itself cannot be listed (`NotFound` when it does not
/// exist); problems with a file are in its report.
pub fn read_dir(dir: &Path, config: &Config, now: DateTime<Utc>) -> io::Result<DirReport> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let is_schedule = Path::new(&name).extension().is_some_and(|e| e == "toml")
            && !name.as_encoded_bytes().starts_with(b".");
        // Following symlinks: a schedule may be linked in from elsewhere. A dangling link
        // is still listed, so its error is reported rather than the file ignored.
        let is_dir = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
        if is_schedule && !is_dir {
            names.push(name);
        }
    }
    names.sort();
    let mut durations = DurationCache::new(config);
    let files = names
        .into_iter()
        .map(|name| read_file(&dir.join(name), config, now, &mut durations))
        .collect();
    Ok(DirReport {
        dir: dir.to_path_buf(),
        files,
    })
}

/// Adds an error for each target area or cluster the store does not know, at the line of
/// its entry (in files with other errors too).
pub async fn check_targets(report: &mut DirReport, store: &Store) -> Result<(), StoreError> {
    for file in &mut report.files {
        let mut found = Vec::new();
        for (code, line) in &file.references.areas {
            match store.area(code).await {
                Ok(_) => {}
                Err(StoreError::NotFound) => {
                    found.push(FileError::new(
                        *line,
                        format!("area `{code}` does not exist"),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        for (id, line) in &file.references.clusters {
            match store.cluster(id).await {
                Ok(_) => {}
                Err(StoreError::NotFound) => {
                    found.push(FileError::new(
                        *line,
                        format!("cluster `{id}` does not exist"),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        if !found.is_empty() {
            file.errors.extend(found);
            sort_errors(&mut file.errors);
        }
    }
    Ok(())
}

fn read_file(
    path: &Path,
    config: &Config,
    now: DateTime<Utc>,
    durations: &mut DurationCache,
) -> FileReport {
    let Some(id) = campaign_id(path) else {
        let error = FileError::new(
            1,
            "the file name is not valid UTF-8, and it makes the campaign id",
        );
        return FileReport::unread(path, error);
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            return FileReport::unread(path, FileError::new(1, format!("cannot read it: {e}")));
        }
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => {
            let before = &bytes[..e.valid_up_to()];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            return FileReport::unread(path, FileError::new(line, "not valid UTF-8 text"));
        }
    };
    // Audio and targets are checked even when the text has other errors, so that one run
    // reports everything.
    let (file, mut errors, references) = match ScheduleFile::parse(text, config.timezone()) {
        Ok(file) => {
            let references = References::of(&file);
            (Some(file), Vec::new(), references)
        }
        Err(errors) => (None, errors, References::find(text)),
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let audio: Vec<AudioFile> = references
        .audio
        .iter()
        .map(|(written, line)| {
            let resolved = base.join(written);
            let duration_ms = durations
                .get(&resolved)
                .map_err(|reason| {
                    errors.push(FileError::new(
                        *line,
                        format!("audio `{written}`: {reason}"),
                    ));
                })
                .ok();
            AudioFile {
                path: resolved,
                duration_ms,
            }
        })
        .collect();
    let parsed = file.map(|file| LoadedFile {
        id: id.clone(),
        path: path.to_path_buf(),
        file,
        audio,
    });
    if let (Some(loaded), Some(quiet)) = (&parsed, config.quiet_hours()) {
        errors.extend(quiet_hours_error(loaded, &quiet, config.audio.gap_ms, now));
    }
    // A relay's host must be one the config allows (as through the API).
    if let Some(loaded) = &parsed
        && let Some(relay) = &loaded.file.relay
    {
        let spec = crate::relay::RelaySpec {
            url: relay.url.clone(),
            duration_s: relay.duration_s,
            fallback_audio_id: None,
        };
        for (field, reason) in spec.problems(&config.relay) {
            errors.push(FileError::new(
                loaded.file.lines.relay,
                format!("`relay.{field}`: {reason}"),
            ));
        }
    }
    sort_errors(&mut errors);
    FileReport {
        path: path.to_path_buf(),
        id,
        parsed,
        errors,
        references,
    }
}

/// An error at the `cron` key listing the first airings that touch quiet hours, if any.
fn quiet_hours_error(
    loaded: &LoadedFile,
    quiet: &QuietHours,
    gap_ms: u32,
    now: DateTime<Utc>,
) -> Option<FileError> {
    let length = loaded.programme_length(gap_ms);
    let clashes =
        loaded
            .file
            .quiet_hours_clashes(quiet, length, now, QUIET_HOURS_HORIZON, QUIET_EXAMPLES);
    if clashes.is_empty() {
        return None;
    }
    let timezone = loaded.file.schedule.timezone;
    let local: Vec<String> = clashes
        .iter()
        .map(|t| {
            t.with_timezone(&timezone)
                .format("%Y-%m-%d %H:%M %:z")
                .to_string()
        })
        .collect();
    let more = if clashes.len() == QUIET_EXAMPLES {
        ", ..."
    } else {
        ""
    };
    // Only a programme's start is known when its audio could not be decoded.
    let what = if loaded.audio.iter().all(|a| a.duration_ms.is_some()) {
        "airs"
    } else {
        "starts"
    };
    Some(FileError::new(
        loaded.file.lines.cron,
        format!(
            "{what} in quiet hours ({quiet}), where only emergencies air; first at: {}{more}",
            local.join(", ")
        ),
    ))
}

/// Audio lengths by path, so a file several campaigns share is decoded once per read.
struct DurationCache {
    limits: DecodeLimits,
    known: HashMap<PathBuf, Result<u64, String>>,
}

impl DurationCache {
    fn new(config: &Config) -> Self {
        Self {
            limits: DecodeLimits {
                max_duration_s: config.audio.max_duration_s,
            },
            known: HashMap::new(),
        }
    }

    /// The length of the audio at `path`, or why it cannot air.
    fn get(&mut self, path: &Path) -> Result<u64, String> {
        let limits = self.limits;
        self.known
            .entry(path.to_path_buf())
            .or_insert_with(|| duration_ms(path, limits))
            .clone()
    }
}

fn duration_ms(path: &Path, limits: DecodeLimits) -> Result<u64, String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("file not found (looked for {})", path.display()));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        Ok(_) => {}
    }
    let extension = path.extension().and_then(|e| e.to_str());
    match decode_file(path, extension, limits) {
        Ok(audio) => Ok(audio.duration_ms()),
        Err(DecodeError::Io(e)) => Err(format!("cannot read {}: {e}", path.display())),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_campaign_id_is_the_file_stem_behind_a_prefix() {
        assert_eq!(
            campaign_id(Path::new("schedules/example-chuyen-doi-so.toml")).as_deref(),
            Some("file:example-chuyen-doi-so")
        );
        assert!(is_file_campaign("file:x"));
        assert!(!is_file_campaign("2f0c8a3e"));
    }

    #[test]
    fn a_programme_is_its_items_and_the_gaps_between_them_repeated() {
        let text = "title = \"t\"\naudio = [\"a\", \"b\"]\ntargets = { areas = [\"x\"] }\n\
                    repeat = 2\n[schedule]\ncron = [\"0 6 * * *\"]\n";
        let file = ScheduleFile::parse(text, chrono_tz::UTC).expect("valid");
        let audio = [1000, 2000]
            .map(|ms| AudioFile {
                path: PathBuf::from("a"),
                duration_ms: Some(ms),
            })
            .to_vec();
        let loaded = LoadedFile {
            id: "file:t".into(),
            path: PathBuf::from("t.toml"),
            file,
            audio,
        };
        // a b a b: 6 s of audio and 3 gaps.
        assert_eq!(loaded.programme_length(500), TimeDelta::milliseconds(7500));
        assert_eq!(loaded.topic(), "t");
    }
}
