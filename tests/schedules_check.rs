//! `loaxa schedules check`: the real binary on temporary directories. Valid files exit 0 and
//! show what will air; each error is one `FILE:LINE: REASON` line and exits 1; unusable
//! configuration or directories exit 2. Nothing is started.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use loaxa::store::{AreaRow, Store, now_rfc3339};

/// A one-second MP3 that decodes.
fn fixture_mp3() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/announce-vi-vbr-1s.mp3")
}

/// A schedules directory holding `audio/hello.mp3` and the given files.
fn schedules(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("audio")).expect("audio dir");
    std::fs::copy(fixture_mp3(), dir.path().join("audio/hello.mp3")).expect("copy fixture");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write schedule");
    }
    dir
}

/// Runs the check on `dir` from an empty working directory (no default config, no
/// database), with `config` as the configuration file if given and `env` set.
fn check(dir: &Path, config: Option<&str>, env: &[(&str, &str)]) -> Output {
    let cwd = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loaxa"));
    cmd.current_dir(cwd.path())
        .args(["schedules", "check"])
        .arg(dir);
    if let Some(text) = config {
        let path = cwd.path().join("loaxa.toml");
        std::fs::write(&path, text).expect("write config");
        cmd.arg("--config").arg(path);
    }
    for var in [
        "LOAXA_DATA_DIR",
        "LOAXA_DATABASE_URL",
        "LOAXA_QUIET_HOURS",
        "LOAXA_LISTEN",
        "LOAXA_RTP_PORT",
        "LOAXA_ADMIN_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `FILE:LINE: REASON` lines of the output, as (file name, line, reason).
fn errors(out: &Output) -> Vec<(String, usize, String)> {
    stderr(out)
        .lines()
        .filter_map(|l| {
            let (path, rest) = l.split_once(".toml:")?;
            let (line, reason) = rest.split_once(": ")?;
            let name = Path::new(path).file_name()?.to_string_lossy().into_owned();
            Some((
                format!("{name}.toml"),
                line.parse().ok()?,
                reason.to_string(),
            ))
        })
        .collect()
}

/// The single error of a run, with the output for assertion messages.
fn single_error(out: &Output) -> (String, usize, String) {
    let mut all = errors(out);
    assert_eq!(all.len(), 1, "stderr: {}", stderr(out));
    all.remove(0)
}

const MORNING: &str = r#"title = "Morning news"
topic = "news"
audio = ["audio/hello.mp3"]
targets = { areas = ["xa-vinh-hoa"] }

[schedule]
cron = ["0 6 * * *"]
timezone = "UTC"
"#;

#[test]
fn a_valid_file_exits_0_and_lists_its_next_three_airings() {
    let dir = schedules(&[("morning.toml", MORNING)]);
    let out = check(dir.path(), None, &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("file:morning"), "{text}");
    assert!(text.contains("Morning news"), "{text}");
    assert_eq!(text.matches("06:00:00 +00:00").count(), 3, "{text}");
    assert!(text.contains("1 file checked, all valid"), "{text}");
    assert!(errors(&out).is_empty());
}

#[test]
fn without_a_database_areas_are_not_checked_and_it_says_so_once() {
    let dir = schedules(&[("morning.toml", MORNING), ("evening.toml", MORNING)]);
    let out = check(dir.path(), None, &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(
        err.matches("areas not checked: no database at").count(),
        1,
        "{err}"
    );
}

#[test]
fn a_bad_cron_rule_is_reported_with_its_line() {
    let text = MORNING.replace(
        "cron = [\"0 6 * * *\"]",
        "cron = [\n  \"0 6 * * *\",\n  \"0 6 * * 8\",\n]",
    );
    let dir = schedules(&[("bad-cron.toml", &text)]);
    let out = check(dir.path(), None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let (file, line, reason) = single_error(&out);
    assert_eq!((file.as_str(), line), ("bad-cron.toml", 9));
    assert!(reason.contains("`0 6 * * 8`"), "{reason}");
    assert!(reason.contains("day-of-week"), "{reason}");
    assert!(stdout(&out).contains("1 with errors"), "{}", stdout(&out));
}

#[test]
fn a_missing_audio_file_is_reported_at_its_entry() {
    let text = MORNING.replace(
        "audio = [\"audio/hello.mp3\"]",
        "audio = [\n  \"audio/hello.mp3\",\n  \"audio/missing.mp3\",\n]",
    );
    let dir = schedules(&[("missing-audio.toml", &text)]);
    let out = check(dir.path(), None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let (_, line, reason) = single_error(&out);
    assert_eq!(line, 5);
    assert!(reason.contains("audio/missing.mp3"), "{reason}");
    assert!(reason.contains("not found"), "{reason}");
}

#[test]
fn an_audio_file_that_is_not_audio_is_reported() {
    let text = MORNING.replace("audio/hello.mp3", "notes.mp3");
    let dir = schedules(&[("not-audio.toml", &text), ("notes.mp3", "just some text\n")]);
    let out = check(dir.path(), None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let (_, line, reason) = single_error(&out);
    assert_eq!(line, 3);
    assert!(
        reason.contains("not in a recognised audio format"),
        "{reason}"
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let text = MORNING.replace("topic = \"news\"", "topic = \"news\"\ncolour = \"blue\"");
    let dir = schedules(&[("unknown-key.toml", &text)]);
    let out = check(dir.path(), None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let (_, line, reason) = single_error(&out);
    assert_eq!(line, 3);
    assert!(reason.contains("unknown key `colour`"), "{reason}");
}

#[test]
fn an_airing_in_quiet_hours_is_reported_at_the_cron_key_with_local_times() {
    let text = MORNING
        .replace("\"0 6 * * *\"", "\"0 6 * * *\", \"0 23 * * *\"")
        .replace("\"UTC\"", "\"Asia/Ho_Chi_Minh\"");
    let dir = schedules(&[("late.toml", &text)]);
    let config = "[schedule]\nquiet_hours = \"22:00-05:00\"\n";
    let out = check(dir.path(), Some(config), &[]);
    assert_eq!(out.status.code(), Some(1));
    let (_, line, reason) = single_error(&out);
    assert_eq!(line, 7);
    assert!(reason.contains("quiet hours (22:00-05:00)"), "{reason}");
    assert!(reason.contains("23:00 +07:00"), "{reason}");
    // Without quiet hours the same file is valid.
    let out = check(dir.path(), Some("[schedule]\nquiet_hours = \"\"\n"), &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
}

#[test]
fn a_bad_timezone_is_reported_with_its_line() {
    let text = MORNING.replace("\"UTC\"", "\"Asia/Hanoi\"");
    let dir = schedules(&[("bad-tz.toml", &text)]);
    let out = check(dir.path(), None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let (_, line, reason) = single_error(&out);
    assert_eq!(line, 8);
    assert!(reason.contains("`Asia/Hanoi`"), "{reason}");
}

#[test]
fn every_error_of_a_file_is_reported_in_line_order() {
    let text = r#"title = "Several mistakes"
audio = ["audio/hello.mp3", "audio/gone.mp3"]
targets = { areas = ["xa-vinh-hoa"] }
priority = "urgent"
[schedule]
cron = ["0 6 * * *", "0 6 * *"]
timezone = "Mars/Olympus"
starts_on = "2026-12-01"
ends_on = "2026-11-01"
"#;
    let dir = schedules(&[("several.toml", text), ("fine.toml", MORNING)]);
    let out = check(dir.path(), None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let found = errors(&out);
    let lines: Vec<usize> = found.iter().map(|(_, line, _)| *line).collect();
    assert_eq!(lines, [2, 4, 6, 7, 9], "{}", stderr(&out));
    assert!(found.iter().all(|(file, _, _)| file == "several.toml"));
    // The valid file next to it is still listed.
    let text = stdout(&out);
    assert!(text.contains("file:fine"), "{text}");
    assert!(
        text.contains("2 files checked: 1 valid, 1 with errors (5 errors)"),
        "{text}"
    );
}

#[test]
fn a_toml_syntax_error_is_reported_with_its_line() {
    let text = MORNING.replace("topic = \"news\"", "topic = \"news");
    let dir = schedules(&[("syntax.toml", &text)]);
    let out = check(dir.path(), None, &[]);
    assert_eq!(out.status.code(), Some(1));
    let (_, line, reason) = single_error(&out);
    assert_eq!(line, 2);
    assert!(reason.starts_with("invalid TOML"), "{reason}");
}

#[test]
fn only_toml_files_directly_in_the_directory_are_read() {
    let dir = schedules(&[
        ("morning.toml", MORNING),
        ("README.md", "not a schedule"),
        ("morning.toml~", "an editor backup"),
        (".#morning.toml", "an editor lock"),
    ]);
    std::fs::create_dir(dir.path().join("old.toml")).expect("dir");
    std::fs::create_dir(dir.path().join("archive")).expect("dir");
    std::fs::write(dir.path().join("archive/broken.toml"), "title = ").expect("write");
    let out = check(dir.path(), None, &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("1 file checked"), "{}", stdout(&out));
}

#[test]
fn with_a_database_unknown_areas_and_clusters_are_reported_at_their_entries() {
    let data = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let url = format!("sqlite://{}", data.path().join("loaxa.db").display());
        let store = Store::open(&url).await.expect("store");
        let area = AreaRow {
            code: "xa-vinh-hoa".into(),
            name: "Xã Vĩnh Hòa".into(),
            kind: "xa".into(),
            parent_code: None,
            created_at: now_rfc3339(),
        };
        store.insert_area(&area).await.expect("area");
        store.close().await;
    });
    let text = MORNING.replace(
        "targets = { areas = [\"xa-vinh-hoa\"] }",
        "[targets]\nareas = [\"xa-vinh-hoa\", \"xa-khong-co\"]\nclusters = [\"no-such-cluster\"]",
    );
    let dir = schedules(&[("unknown-area.toml", &text), ("known.toml", MORNING)]);
    let data_dir = data.path().to_str().expect("utf-8 path");
    let out = check(dir.path(), None, &[("LOAXA_DATA_DIR", data_dir)]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let found = errors(&out);
    let found: Vec<(usize, &str)> = found.iter().map(|(_, l, r)| (*l, r.as_str())).collect();
    assert_eq!(
        found,
        [
            (5, "area `xa-khong-co` does not exist"),
            (6, "cluster `no-such-cluster` does not exist"),
        ],
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("areas not checked"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("file:known"), "{}", stdout(&out));
}

#[test]
fn the_repositorys_own_schedules_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
    let out = check(&dir, None, &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(
        stdout(&out).contains("file:example-chuyen-doi-so"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_empty_directory_is_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = check(dir.path(), None, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("no schedule files"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_missing_directory_or_a_bad_config_exits_2() {
    let out = check(Path::new("/nonexistent/schedules"), None, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/schedules"),
        "{}",
        stderr(&out)
    );
    let dir = schedules(&[("morning.toml", MORNING)]);
    let out = check(
        dir.path(),
        Some("[schedule]\nquiet_hours = \"late\"\n"),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("quiet_hours"), "{}", stderr(&out));
}

const RELAY: &str = r#"title = "Tiếp sóng Đài TNVN"
relay = { url = "http://radio.example.vn:8000/vov1.mp3", duration_s = 1800 }
targets = { areas = ["xa-vinh-hoa"] }
priority = "live"

[schedule]
cron = ["30 21 * * *"]
timezone = "Asia/Ho_Chi_Minh"
"#;

#[test]
fn a_relay_file_is_checked_for_its_host_and_its_whole_window() {
    let dir = schedules(&[("tiep-song.toml", RELAY)]);
    // The host must be allowed by the config, as through the API.
    let out = check(dir.path(), Some("[schedule]\nquiet_hours = \"\"\n"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let (_, line, reason) = single_error(&out);
    assert_eq!(line, 2);
    assert!(reason.contains("not in relay.allowed_hosts"), "{reason}");
    // Allowed, and its 30 min window from 21:30 runs into quiet hours at 22:00.
    let allowed = "[relay]\nallowed_hosts = [\"radio.example.vn\"]\n";
    let quiet = format!("{allowed}[schedule]\nquiet_hours = \"22:00-05:00\"\n");
    let out = check(dir.path(), Some(&quiet), &[]);
    assert_eq!(out.status.code(), Some(1));
    let (_, line, reason) = single_error(&out);
    assert_eq!(line, 7);
    assert!(reason.contains("quiet hours"), "{reason}");
    // At 05:30 it is clear of them: valid.
    let morning = RELAY.replace("30 21 * * *", "30 5 * * *");
    let dir = schedules(&[("tiep-song.toml", &morning)]);
    let out = check(dir.path(), Some(&quiet), &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("05:30:00 +07:00"), "{}", stdout(&out));
}
