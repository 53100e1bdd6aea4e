//! The dashboard in a real browser: headless Chromium, driven over WebDriver by a
//! chromedriver each test starts, against the real daemon (and, for the technician, a
//! real `loaxa agent`). Each test is one user doing their job: an officer uploads and
//! builds a campaign, an operator fires and cancels an emergency, a technician sees a
//! cluster go offline, a refused upload shows the server's reason. Needs Debian's
//! `chromium` and `chromium-driver`, hence the `interop` feature (.ci/run installs them).
//! A failure leaves a screenshot in `target/browser-screenshots/`; with
//! `LOAXA_SCREENSHOTS=DIR` each view is also saved on success (the README's pictures).

mod common;

use std::fmt::Display;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Timelike, Weekday};
use common::*;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// chromedriver is listening within ~100 ms; a loaded 2-core CI machine is slower.
const DRIVER_READY_WITHIN: Duration = Duration::from_secs(10);
/// Starting Chromium itself, the slowest step of a test.
const SESSION_WITHIN: Duration = Duration::from_secs(20);
/// An agent heartbeats every second; room for its start-up.
const ONLINE_WITHIN: Duration = Duration::from_secs(5);
/// A page step: a few requests and a render, with slack for tests running side by side.
const PAGE_WITHIN: Duration = Duration::from_secs(5);
/// Decoding and measuring a ten-second announcement on a busy 2-core machine.
const UPLOAD_WITHIN: Duration = Duration::from_secs(15);
/// Offline is declared 3 s after the last heartbeat, which came up to 1 s before the
/// kill; the rest is the event stream and the render, with slack for a busy machine.
const OFFLINE_WITHIN: Duration = Duration::from_secs(10);
/// An emergency is encoded for the cluster's codec, then cuts in on the next tick; the
/// console polls every second.
const PLAYING_WITHIN: Duration = Duration::from_secs(10);
/// After a cancel the pacer stops at the next tick; this is how long the socket must
/// then stay silent to count as quiet, and how long that may take to happen.
const QUIET_FOR: Duration = Duration::from_millis(500);
const QUIET_WITHIN: Duration = Duration::from_secs(3);
/// The README's screenshots: small enough to read, small enough to commit.
const SHOT_SIZE: (u32, u32) = (1000, 700);

/// Health settings short enough for tests: a heartbeat a second, offline after 3 s.
const HEALTH: &str = "[health]\noffline_after_s = 3\nheartbeat_interval_s = 1\n";

#[tokio::test]
async fn an_officer_uploads_an_announcement_and_builds_a_campaign_without_writing_cron() {
    const TEST: &str =
        "an_officer_uploads_an_announcement_and_builds_a_campaign_without_writing_cron";
    // Quiet hours are off (the harness's default), so any time of day may be picked.
    let app = spawn_app().await;
    create_area(&app, "huyen", "Huyện Vĩnh Linh", "district", None).await;
    create_area(&app, "xa", "Xã Vĩnh Hòa", "commune", Some("huyen")).await;
    create_area(&app, "thon-dong", "Thôn Đông", "hamlet", Some("xa")).await;
    let token = create_user(&app, "Chị Lan", "officer", "xa", true).await;

    let driver = Chromedriver::start(app.dir.path());
    let page = Page::open(&driver, TEST).await;
    let result = officer_works(&page, &app, &token).await;
    page.finish(result).await;
}

async fn officer_works(page: &Page, app: &TestApp, token: &str) -> Result<(), String> {
    page.sign_in(app, token, "Cán bộ văn hóa").await?;
    // An officer lands on the library.
    page.find(r#"#tab-library[aria-selected="true"]"#, PAGE_WITHIN)
        .await?;
    let audio_id = officer_uploads(page, app).await?;
    let campaign = officer_builds_a_campaign(page, &audio_id).await?;
    officer_approves_and_reads_the_week(page, app, &campaign, &audio_id).await?;
    page.shot("officer", Some(("#campaign-days", "start")))
        .await
}

/// Through the file input (what a keyboard user does; dropping a file lands in the same
/// code), then the duration and loudness the server measured.
async fn officer_uploads(page: &Page, app: &TestApp) -> Result<String, String> {
    let file = fixture("announce-vi.mp3");
    page.type_into("#upload-file", path_str(&file)).await?;
    page.type_into("#upload-title", "Thông báo chuyển đổi số")
        .await?;
    page.type_into("#upload-topic", "chuyen-doi-so").await?;
    page.click("#upload-submit").await?;
    let duration = page.find("#upload-duration", UPLOAD_WITHIN).await?;
    let shown = ctx(duration.text().await, "duration text")?;
    check(shown == "0:10", || format!("duration shown as {shown:?}"))?;
    let ms: u64 = attr(&duration, "data-ms").await?.parse().unwrap_or(0);
    check((10_100..=10_300).contains(&ms), || {
        format!("duration {ms} ms, the file lasts 10.19 s")
    })?;

    let library = app.json_ok("/api/v1/audio").await;
    let stored = &library[0];
    check(
        stored["title"] == "Thông báo chuyển đổi số",
        || format!("the library holds {library}"),
    )?;
    let loudness = page.find("#upload-loudness", PAGE_WITHIN).await?;
    let lufs: f64 = attr(&loudness, "data-lufs").await?.parse().unwrap_or(0.0);
    let want = stored["loudness_lufs"].as_f64().unwrap_or(f64::NAN);
    check((lufs - want).abs() < 0.05 && lufs < -10.0, || {
        format!("loudness shown {lufs}, measured {want}")
    })?;
    let text = ctx(loudness.text().await, "loudness text")?;
    // Vietnamese writes a decimal comma.
    check(text.contains(" LUFS") && text.contains(','), || {
        format!("loudness reads {text:?}")
    })?;
    let id = stored["id"].as_str().unwrap_or_default().to_string();
    page.find(
        &format!(r#"#library-list tr[data-audio-id="{id}"]"#),
        PAGE_WITHIN,
    )
    .await?;
    Ok(id)
}

/// Areas on the tree, two days and two times: the page makes the cron and shows the
/// server's next airings before anything is saved. Returns the saved campaign's id.
async fn officer_builds_a_campaign(page: &Page, audio_id: &str) -> Result<String, String> {
    page.click("#tab-campaigns").await?;
    page.find("#campaigns-view:not([hidden])", PAGE_WITHIN)
        .await?;
    page.type_into("#campaign-title", "Tuyên truyền chuyển đổi số")
        .await?;
    page.type_into("#campaign-topic", "chuyen-doi-so").await?;
    page.find(
        &format!(r#"#campaign-audio option[value="{audio_id}"]"#),
        PAGE_WITHIN,
    )
    .await?;
    let select = page.find("#campaign-audio", PAGE_WITHIN).await?;
    ctx(select.select_by_value(audio_id).await, "pick the audio")?;
    // The tree starts at the officer's commune: the district is not offered.
    check(page.count("#campaign-area-huyen").await? == 0, || {
        "the tree offers an area outside the officer's scope".into()
    })?;
    page.click("#campaign-area-xa").await?;
    // A hamlet below a ticked commune is included: shown ticked, and fixed.
    let hamlet = page.find("#campaign-area-thon-dong", PAGE_WITHIN).await?;
    let (ticked, enabled) = (
        ctx(hamlet.is_selected().await, "hamlet ticked")?,
        ctx(hamlet.is_enabled().await, "hamlet enabled")?,
    );
    check(ticked && !enabled, || {
        format!("the hamlet below the commune is ticked={ticked} enabled={enabled}")
    })?;
    page.click("#day-1").await?;
    page.click("#day-3").await?;
    page.type_into("#time-1", "0630").await?;
    page.click("#campaign-add-time").await?;
    page.type_into("#time-2", "17:00").await?;

    // Mondays and Wednesdays, one rule per time.
    let want = "30 6 * * 1,3\n0 17 * * 1,3";
    page.wait_text("#campaign-cron", PAGE_WITHIN, |t| t == want)
        .await?;
    let shown = page.wait_count("#campaign-preview li time", 8).await?;
    check_airings(&shown).await?;

    page.click("#campaign-save").await?;
    let saved = page
        .find(r#"#campaign-saved[data-status="pending"]"#, PAGE_WITHIN)
        .await?;
    let text = ctx(saved.text().await, "saved message")?;
    check(text.contains("Chờ duyệt"), || {
        format!("saved message reads {text:?}")
    })?;
    attr(&saved, "data-campaign-id").await
}

/// Every airing shown is on a Monday or Wednesday at 06:30 or 17:00 in Hanoi time, in
/// order and in the future, and the page names the days in Vietnamese.
async fn check_airings(shown: &[Element]) -> Result<(), String> {
    let now = chrono::Utc::now();
    let mut last = None;
    let mut seen = std::collections::BTreeSet::new();
    let mut days_named = String::new();
    for time in shown {
        let iso = attr(time, "datetime").await?;
        let at = DateTime::parse_from_rfc3339(&iso).map_err(|e| format!("{iso:?}: {e}"))?;
        let ok_day = matches!(at.weekday(), Weekday::Mon | Weekday::Wed);
        let hm = (at.hour(), at.minute());
        check(
            at.offset().local_minus_utc() == 7 * 3600 && ok_day && (hm == (6, 30) || hm == (17, 0)),
            || format!("airing {iso} is not Mon/Wed 06:30/17:00 +07:00"),
        )?;
        check(at > now && last.is_none_or(|l| at > l), || {
            format!("airing {iso} is not after the previous one and now")
        })?;
        last = Some(at);
        seen.insert((at.weekday().num_days_from_monday(), hm));
        days_named.push_str(&ctx(time.text().await, "airing text")?);
    }
    check(seen.len() == 4, || {
        format!("eight airings cover {seen:?}, not both days at both times")
    })?;
    check(
        days_named.contains("Thứ Hai") && days_named.contains("Thứ Tư"),
        || format!("the airings read {days_named:?}"),
    )
}

/// Approval from the list; then the server holds what the page built, and the week
/// calendar places each airing on its day.
async fn officer_approves_and_reads_the_week(
    page: &Page,
    app: &TestApp,
    id: &str,
    audio_id: &str,
) -> Result<(), String> {
    let row = format!(r#"#campaign-list tr[data-campaign-id="{id}"]"#);
    page.find(&format!(r#"{row}[data-status="pending"]"#), PAGE_WITHIN)
        .await?;
    page.click(&format!("{row} button.approve")).await?;
    page.find(&format!(r#"{row}[data-status="approved"]"#), PAGE_WITHIN)
        .await?;
    let c = app.json_ok(&format!("/api/v1/campaigns/{id}")).await;
    check(
        c["status"] == "approved"
            && c["schedule"]["cron"] == json!(["30 6 * * 1,3", "0 17 * * 1,3"])
            && c["targets"]["areas"] == json!(["xa"])
            && c["audio_ids"] == json!([audio_id])
            && c["title"] == "Tuyên truyền chuyển đổi số",
        || format!("the server holds {c}"),
    )?;

    let events = format!(r#"#week-calendar .ev[data-campaign-id="{id}"][data-status="approved"]"#);
    // This week, whichever day today is: Monday and Wednesday, twice each.
    page.wait_count(&events, 4).await?;
    let first = week_airings(page, id).await?;
    page.click("#week-next").await?;
    // The next week's dates, a week later.
    let deadline = Instant::now() + PAGE_WITHIN;
    loop {
        let next = week_airings(page, id).await?;
        if next.len() == 4 && next[0].0 > first[0].0 {
            break;
        }
        check(Instant::now() < deadline, || {
            format!("next week shows {next:?} after {first:?}")
        })?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// (day column's date, airing instant) for each airing of `id` in the week shown, each
/// checked to sit in the column of its own date in Hanoi time.
async fn week_airings(page: &Page, id: &str) -> Result<Vec<(String, String)>, String> {
    let script = r#"return [...document.querySelectorAll('#week-calendar .ev[data-campaign-id="' + arguments[0] + '"]')]
        .map((e) => [e.closest('.day').dataset.date, e.querySelector('time').dateTime]);"#;
    let v = ctx(
        page.client.execute(script, vec![json!(id)]).await,
        "read the week",
    )?;
    let pairs: Vec<(String, String)> = serde_json::from_value(v).map_err(|e| e.to_string())?;
    let hanoi = chrono::FixedOffset::east_opt(7 * 3600).expect("offset");
    for (date, iso) in &pairs {
        let at = DateTime::parse_from_rfc3339(iso)
            .map_err(|e| format!("{iso:?}: {e}"))?
            .with_timezone(&hanoi);
        let local = at.format("%Y-%m-%d").to_string();
        check(
            &local == date && matches!(at.weekday(), Weekday::Mon | Weekday::Wed),
            || format!("airing {iso} shown on {date}"),
        )?;
    }
    Ok(pairs)
}

#[tokio::test]
async fn an_operator_fires_an_emergency_with_a_second_deliberate_action_and_cancels_it() {
    const TEST: &str =
        "an_operator_fires_an_emergency_with_a_second_deliberate_action_and_cancels_it";
    let app = spawn_app().await;
    create_area(&app, "tinh", "Tỉnh Quảng Trị", "province", None).await;
    create_area(&app, "huyen", "Huyện Gio Linh", "district", Some("tinh")).await;
    create_area(&app, "xa", "Xã Gio Mỹ", "commune", Some("huyen")).await;
    let rx = Receiver::bind();
    let r = app
        .post_json(
            "/api/v1/clusters",
            &json!({"name": "Cụm loa thôn Tân Minh", "area_code": "xa", "codec": "pcmu",
                    "endpoint": {"mode": "unicast", "address": rx.addr().to_string()}}),
        )
        .await;
    assert_eq!(r.status(), 201, "create cluster");
    let cluster: Value = r.json().await.expect("json");
    let cluster_id = cluster["id"].as_str().expect("id").to_string();
    let r = app
        .upload(&fixture("announce-vi.mp3"), "Cảnh báo bão số 3")
        .await;
    assert_eq!(r.status(), 201, "upload");
    let audio: Value = r.json().await.expect("json");
    let audio_id = audio["id"].as_str().expect("id").to_string();
    let token = create_user(&app, "Anh Hùng", "operator", "huyen", false).await;
    let packets = PacketLog::listen(rx);

    let driver = Chromedriver::start(app.dir.path());
    let page = Page::open(&driver, TEST).await;
    let result = operator_works(&page, &app, &token, &cluster_id, &audio_id, &packets).await;
    page.finish(result).await;
}

async fn operator_works(
    page: &Page,
    app: &TestApp,
    token: &str,
    cluster_id: &str,
    audio_id: &str,
    packets: &PacketLog,
) -> Result<(), String> {
    page.sign_in(app, token, "Điều hành viên").await?;
    // An operator lands on the emergency console.
    page.find(r#"#tab-emergency[aria-selected="true"]"#, PAGE_WITHIN)
        .await?;
    page.find("#emergency-area-huyen", PAGE_WITHIN).await?;
    check(page.count("#emergency-area-tinh").await? == 0, || {
        "the console offers the province, outside the operator's district".into()
    })?;
    page.click("#emergency-area-huyen").await?;
    page.find(
        &format!(r#"#emergency-audio option[value="{audio_id}"]"#),
        PAGE_WITHIN,
    )
    .await?;
    let select = page.find("#emergency-audio", PAGE_WITHIN).await?;
    ctx(select.select_by_value(audio_id).await, "pick the message")?;
    // Twice: long enough to still be on air when cancelled.
    page.type_into("#emergency-repeat", "2").await?;

    // The first action only arms and summarises.
    page.click("#emergency-arm").await?;
    page.find("#emergency-confirm-box:not([hidden])", PAGE_WITHIN)
        .await?;
    let reach = page.text("#emergency-summary-clusters").await?;
    let areas = page.text("#emergency-summary-areas").await?;
    let message = page.text("#emergency-summary-message").await?;
    check(
        reach == "1" && areas == "Huyện Gio Linh" && message.contains("Cảnh báo bão số 3"),
        || format!("summary: {areas:?}, {message:?}, {reach:?} clusters"),
    )?;
    let before = app.json_ok("/api/v1/emergency").await;
    check(before == json!([]), || {
        format!("the first click already sent an emergency: {before}")
    })?;
    check(packets.count() == 0, || {
        "the cluster received audio before the confirmation".into()
    })?;
    page.shot("operator", Some(("#emergency-confirm-box", "end")))
        .await?;

    // The second, different action sends it.
    page.click("#emergency-confirm").await?;
    let row = format!(r#"#emergency-clusters tr[data-cluster-id="{cluster_id}"]"#);
    page.find(&format!(r#"{row}[data-status="playing"]"#), PLAYING_WITHIN)
        .await?;
    page.find(r#"#emergency-status[data-status="playing"]"#, PAGE_WITHIN)
        .await?;
    packets.wait_for_audio(PAGE_WITHIN).await?;
    // The table follows the airing without a reload: its packet count keeps rising.
    let cell = format!("{row} td.c-packets");
    let first = number(&page.text(&cell).await?);
    page.wait_text(&cell, PAGE_WITHIN, |t| number(t) > first + 25)
        .await?;

    page.click("#emergency-cancel").await?;
    page.find(r#"#emergency-status[data-status="cancelled"]"#, PAGE_WITHIN)
        .await?;
    let status = page
        .wait_text(&format!("{row} .c-status"), PAGE_WITHIN, |t| t == "Đã dừng")
        .await?;
    check(status == "Đã dừng", || {
        format!("cluster status {status:?}")
    })?;
    check(!page.displayed("#emergency-cancel").await?, || {
        "the cancel button is still offered".into()
    })?;
    // The server agrees, and the cluster's socket falls silent.
    let list = app.json_ok("/api/v1/emergency").await;
    check(
        list.as_array().map(Vec::len) == Some(1)
            && list[0]["status"] == "cancelled"
            && list[0]["clusters"][0]["id"] == cluster_id
            && list[0]["clusters"][0]["status"] == "cancelled",
        || format!("the server holds {list}"),
    )?;
    packets.wait_quiet(QUIET_FOR, QUIET_WITHIN).await?;
    operator_reads_the_report(page, app).await
}

/// The as-run report counts what went out before the cancel: a bar for the emergency
/// topic and for the commune, and the same figures as CSV.
async fn operator_reads_the_report(page: &Page, app: &TestApp) -> Result<(), String> {
    page.click("#tab-report").await?;
    let topic = r#"#report-topic-chart tr[data-key="emergency"]"#;
    page.find(&format!("{topic} svg.bar rect.bar-fill"), PAGE_WITHIN)
        .await?;
    let minutes = page.text(&format!("{topic} td.num")).await?;
    let area = page
        .text(r#"#report-area-chart tr[data-key="xa"] th"#)
        .await?;
    check(minutes.contains(',') && number(&minutes) > 0, || {
        format!("{minutes:?} minutes aired, for {area:?}")
    })?;
    check(area == "Xã Gio Mỹ", || {
        format!("area bar labelled {area:?}")
    })?;

    page.click("#report-csv-topic").await?;
    let link = page
        .find("#report-csv-link:not([hidden])", PAGE_WITHIN)
        .await?;
    let name = ctx(link.text().await, "link text")?;
    // What the browser saved (Chromium writes `NAME.crdownload`, then renames it).
    let saved = page.downloads.join(&name);
    let deadline = Instant::now() + PAGE_WITHIN;
    while !saved.exists() {
        check(Instant::now() < deadline, || {
            format!("{} was not downloaded", saved.display())
        })?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let csv = ctx(std::fs::read_to_string(&saved), "read the CSV")?;
    let csv = csv.as_str();
    let line = csv.lines().find(|l| l.starts_with("emergency,"));
    check(
        name.starts_with("airtime-topic-")
            && csv.starts_with("topic,label,minutes,airings,clusters")
            && line.is_some_and(|l| l.ends_with(",1,1")),
        || format!("{name:?} holds {csv:?}"),
    )?;
    // The same figure as the API's.
    let report = app
        .json_ok("/api/v1/reports/airtime?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z")
        .await;
    let api_minutes = report["rows"][0]["minutes"].as_f64().unwrap_or(0.0);
    let csv_minutes: f64 = line
        .and_then(|l| l.split(',').nth(2))
        .and_then(|m| m.parse().ok())
        .unwrap_or(-1.0);
    check(
        (api_minutes - csv_minutes).abs() < 0.005 && api_minutes > 0.0,
        || format!("CSV says {csv_minutes} minutes, the API {api_minutes}"),
    )
}

/// The digits of a number as the page writes it (`1.234`, `0,08` in Vietnamese).
fn number(text: &str) -> u64 {
    text.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_refused_upload_shows_the_servers_reason() {
    const TEST: &str = "a_refused_upload_shows_the_servers_reason";
    let app = spawn_app().await;
    create_area(&app, "xa", "Xã Vĩnh Hòa", "commune", None).await;
    let token = create_user(&app, "Chị Lan", "officer", "xa", false).await;
    // What the server says about this file, asked directly.
    let file = fixture("broken-truncated.mp3");
    let r = app.upload(&file, "hỏng").await;
    assert_eq!(r.status(), 422, "a truncated MP3 is refused");
    let problem: Value = r.json().await.expect("problem");
    let detail = problem["detail"].as_str().expect("detail").to_string();
    assert!(detail.contains("not usable audio"), "{problem}");

    let driver = Chromedriver::start(app.dir.path());
    let page = Page::open(&driver, TEST).await;
    let result = refused_upload(&page, &app, &token, &file, &detail).await;
    page.finish(result).await;
}

async fn refused_upload(
    page: &Page,
    app: &TestApp,
    token: &str,
    file: &Path,
    detail: &str,
) -> Result<(), String> {
    page.sign_in(app, token, "Cán bộ văn hóa").await?;
    page.type_into("#upload-file", path_str(file)).await?;
    page.click("#upload-submit").await?;
    let error = page
        .find("#upload-error:not([hidden])", UPLOAD_WITHIN)
        .await?;
    let shown = ctx(error.text().await, "error text")?;
    check(shown == format!("Tệp bị từ chối: {detail}"), || {
        format!("the page says {shown:?}; the server said {detail:?}")
    })?;
    check(attr(&error, "role").await? == "alert", || {
        "the refusal is not announced (role=alert)".into()
    })?;
    check(!page.displayed("#upload-result").await?, || {
        "a result is shown for a refused file".into()
    })?;
    let library = app.json_ok("/api/v1/audio").await;
    check(library == json!([]), || {
        format!("the library holds {library}")
    })
}

#[tokio::test]
async fn a_technician_sees_a_cluster_go_offline_live() {
    const TEST: &str = "a_technician_sees_a_cluster_go_offline_live";
    let app = spawn_app_with_config(HEALTH).await;
    create_area(&app, "xa", "Xã Vĩnh Hòa", "commune", None).await;
    let cluster = create_cluster(&app).await;
    let id = cluster["id"].as_str().expect("cluster id").to_string();
    let token = create_user(&app, "Anh Tuấn", "technician", "xa", false).await;

    let mut agent = start_agent(&app, &cluster);
    let health = wait_health(&app, &id, "online", ONLINE_WITHIN).await;
    assert_eq!(health["status"], "online", "{health}");

    let driver = Chromedriver::start(app.dir.path());
    let page = Page::open(&driver, TEST).await;
    let result = technician_watches(&page, &app, &token, &id, &mut agent).await;
    page.finish(result).await;
}

/// In the browser: every failure comes back as an error so that the caller can take a
/// screenshot before it panics.
async fn technician_watches(
    page: &Page,
    app: &TestApp,
    token: &str,
    id: &str,
    agent: &mut Agent,
) -> Result<(), String> {
    let c = &page.client;
    page.sign_in(app, token, "Kỹ thuật viên").await?;
    let row = format!(r#"#health-list tr[data-cluster-id="{id}"]"#);
    let tile = format!(r#"#health-grid [data-cluster-id="{id}"]"#);
    page.find(&format!(r#"{row}[data-status="online"]"#), PAGE_WITHIN)
        .await?;
    page.find(&format!(r#"{tile}[data-status="online"]"#), PAGE_WITHIN)
        .await?;
    // Only a connected stream can bring the change without a reload.
    page.find(r#"#live[data-state="on"]"#, PAGE_WITHIN).await?;

    // A reload would wipe this; the page must change in place.
    ctx(
        c.execute("window.loaxaNotReloaded = true;", vec![]).await,
        "mark the page",
    )?;
    ctx(agent.0.kill(), "kill the agent")?;
    ctx(agent.0.wait(), "reap the agent")?;
    let killed = Instant::now();
    page.find(&format!(r#"{row}[data-status="offline"]"#), OFFLINE_WITHIN)
        .await?;
    let took = killed.elapsed();
    page.find(&format!(r#"{tile}[data-status="offline"]"#), PAGE_WITHIN)
        .await?;
    let kept = ctx(
        c.execute("return window.loaxaNotReloaded === true;", vec![])
            .await,
        "read the mark",
    )?;
    check(kept == Value::Bool(true), || {
        "the page reloaded instead of updating live".into()
    })?;
    let offline = page.text(r#"#counts [data-status="offline"] .n"#).await?;
    check(offline == "1", || {
        format!("offline count is {offline:?} after {took:?}")
    })?;
    page.shot("technician", None).await?;

    page.click("#lang").await?;
    page.find(r#"html[lang="en"]"#, PAGE_WITHIN).await?;
    let status = page.text(&format!("{row} .c-status")).await?;
    check(status.contains("Offline"), || {
        format!("status cell in English reads {status:?}")
    })?;
    Ok(())
}

/// An area with a Vietnamese name (the page must render its diacritics).
async fn create_area(app: &TestApp, code: &str, name: &str, kind: &str, parent: Option<&str>) {
    let r = app
        .post_json(
            "/api/v1/areas",
            &json!({"code": code, "name": name, "kind": kind, "parent_code": parent}),
        )
        .await;
    assert_eq!(r.status(), 201, "create area {code}");
}

/// A user of `role` scoped to `area`; returns their token.
async fn create_user(app: &TestApp, name: &str, role: &str, area: &str, approve: bool) -> String {
    let r = app
        .post_json(
            "/api/v1/users",
            &json!({"name": name, "role": role, "area_code": area, "can_approve": approve}),
        )
        .await;
    assert_eq!(r.status(), 201, "create {role}");
    let user: Value = r.json().await.expect("json");
    user["token"].as_str().expect("token").to_string()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 fixture path")
}

async fn attr(e: &Element, name: &str) -> Result<String, String> {
    ctx(e.attr(name).await, name)?.ok_or_else(|| format!("no `{name}` attribute"))
}

/// Every RTP datagram a cluster's socket receives, with when it came.
struct PacketLog {
    arrivals: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PacketLog {
    fn listen(rx: Receiver) -> PacketLog {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log, done) = (arrivals.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            // The socket's 200 ms read timeout lets this notice `stop`.
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                if rx.rtp.recv(&mut buf).is_ok() {
                    log.lock().expect("log").push(Instant::now());
                }
            }
        });
        PacketLog {
            arrivals,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.arrivals.lock().expect("log").len()
    }

    fn last(&self) -> Option<Instant> {
        self.arrivals.lock().expect("log").last().copied()
    }

    async fn wait_for_audio(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while self.count() == 0 {
            check(Instant::now() < deadline, || {
                format!("no RTP packet reached the cluster within {within:?}")
            })?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Waits until no packet has come for `quiet` (the stream stopped), up to `within`.
    async fn wait_quiet(&self, quiet: Duration, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if self.last().is_some_and(|l| l.elapsed() >= quiet) {
                return Ok(());
            }
            check(Instant::now() < deadline, || {
                format!(
                    "packets kept coming {within:?} after the cancel ({} in all)",
                    self.count()
                )
            })?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PacketLog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A `loaxa agent` process, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(app: &TestApp, cluster: &Value) -> Agent {
    let log = std::fs::File::create(app.dir.path().join("agent.log")).expect("agent log");
    Agent(
        Command::new(env!("CARGO_BIN_EXE_loaxa"))
            .args(["agent", "--controller", &app.base, "--cluster"])
            .arg(cluster["id"].as_str().expect("id"))
            .args(["--output", "null", "--bind", "127.0.0.1"])
            .env(
                "LOAXA_AGENT_TOKEN",
                cluster["agent_token"].as_str().expect("agent token"),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start agent"),
    )
}

/// A unicast cluster in `xa` on a free loopback port pair (RTP, RTCP = +1).
async fn create_cluster(app: &TestApp) -> Value {
    let address: SocketAddr = Receiver::bind().addr();
    let r = app
        .post_json(
            "/api/v1/clusters",
            &json!({"name": "Cụm thôn 1", "area_code": "xa", "codec": "pcmu",
                    "endpoint": {"mode": "unicast", "address": address.to_string()}}),
        )
        .await;
    assert_eq!(r.status(), 201, "create cluster");
    r.json().await.expect("json")
}

async fn wait_health(app: &TestApp, id: &str, want: &str, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let v = app.json_ok(&format!("/api/v1/clusters/{id}/health")).await;
        if v["status"] == want || start.elapsed() > within {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// chromedriver on a free loopback port, in its own process group so that dropping it
/// takes the Chromium it started along.
struct Chromedriver {
    child: Child,
    port: u16,
    /// The test's temporary directory: logs, downloads.
    dir: PathBuf,
}

impl Chromedriver {
    fn start(log_dir: &Path) -> Chromedriver {
        assert!(
            Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: apt-get install chromium chromium-driver"
        );
        let log_path = log_dir.join("chromedriver.log");
        // The port is free when asked for and taken a moment later; someone else may
        // take it in between, so a driver that exits early is tried again on another.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let log = std::fs::File::create(&log_path).expect("chromedriver log");
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::from(log.try_clone().expect("log")))
                .stderr(Stdio::from(log))
                .process_group(0)
                .spawn()
                .expect("start chromedriver");
            let mut driver = Chromedriver {
                child,
                port,
                dir: log_dir.to_path_buf(),
            };
            let start = Instant::now();
            while start.elapsed() < DRIVER_READY_WITHIN {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return driver;
                }
                if driver.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!(
            "chromedriver did not start:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The group is the driver and every Chromium process it started. Its id is the
        // driver's pid, which stays ours until we reap it below.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory
            // is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// One browser session on the dashboard, named after the test for its screenshot.
struct Page {
    client: Client,
    test: &'static str,
    /// Where the browser saves downloads (inside the test's temporary directory).
    downloads: PathBuf,
}

impl Page {
    async fn open(driver: &Chromedriver, test: &'static str) -> Page {
        let downloads = driver.dir.join("downloads");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--window-size=1280,900"],
                "prefs": {"download.default_directory": downloads,
                          "download.prompt_for_download": false},
            }),
        );
        let connect = async {
            ClientBuilder::rustls()
                .expect("TLS roots")
                .capabilities(caps)
                .connect(&driver.url())
                .await
        };
        let client = tokio::time::timeout(SESSION_WITHIN, connect)
            .await
            .unwrap_or_else(|_| panic!("no Chromium session within {SESSION_WITHIN:?}"))
            .unwrap_or_else(|e| panic!("start a Chromium session: {e}"));
        Page {
            client,
            test,
            downloads,
        }
    }

    /// Opens the dashboard, checks it speaks Vietnamese first, signs in with `token` and
    /// waits for the header to name the user's role.
    async fn sign_in(&self, app: &TestApp, token: &str, role: &str) -> Result<(), String> {
        ctx(self.client.goto(&app.url("/")).await, "open the dashboard")?;
        self.find(r#"html[lang="vi"]"#, PAGE_WITHIN).await?;
        let label = self.text("#signin").await?;
        check(label == "Đăng nhập", || {
            format!("sign-in button says {label:?}")
        })?;
        check(self.displayed("#signin").await?, || {
            "the sign-in button is hidden".into()
        })?;
        self.type_into("#token", token).await?;
        self.click("#signin").await?;
        self.find("#app-view:not([hidden])", PAGE_WITHIN).await?;
        let who = self.text("#whoami").await?;
        check(who.contains(role), || format!("signed in as {who:?}"))
    }

    /// Waits for an element matching `css`.
    async fn find(&self, css: &str, within: Duration) -> Result<Element, String> {
        self.client
            .wait()
            .at_most(within)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
            .map_err(|e| format!("no `{css}` within {within:?}: {e}"))
    }

    /// How many elements match `css` now.
    async fn count(&self, css: &str) -> Result<usize, String> {
        let all = ctx(self.client.find_all(Locator::Css(css)).await, css)?;
        Ok(all.len())
    }

    async fn click(&self, css: &str) -> Result<(), String> {
        let e = self.find(css, PAGE_WITHIN).await?;
        ctx(e.click().await, &format!("click `{css}`"))
    }

    /// Replaces what the field holds with `text`, typed key by key (a file input takes a
    /// path this way).
    async fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let e = self.find(css, PAGE_WITHIN).await?;
        let is_file = ctx(e.attr("type").await, "input type")?.as_deref() == Some("file");
        if !is_file {
            ctx(e.clear().await, &format!("clear `{css}`"))?;
        }
        ctx(e.send_keys(text).await, &format!("type into `{css}`"))
    }

    /// The text of `css`. Found again if the page replaced the element between finding
    /// and reading it (live views re-render).
    async fn text(&self, css: &str) -> Result<String, String> {
        let deadline = Instant::now() + PAGE_WITHIN;
        loop {
            let e = self.find(css, PAGE_WITHIN).await?;
            match e.text().await {
                Ok(text) => return Ok(text),
                Err(e) if e.is_stale_element_reference() && Instant::now() < deadline => {}
                Err(e) => return Err(format!("text of `{css}`: {e}")),
            }
        }
    }

    async fn displayed(&self, css: &str) -> Result<bool, String> {
        let e = self.find(css, PAGE_WITHIN).await?;
        ctx(e.is_displayed().await, &format!("is `{css}` shown"))
    }

    /// Waits until the text of `css` satisfies `ok`; returns it.
    async fn wait_text(
        &self,
        css: &str,
        within: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let text = self.text(css).await?;
            if ok(&text) {
                return Ok(text);
            }
            check(Instant::now() < deadline, || {
                format!("`{css}` still reads {text:?} after {within:?}")
            })?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until exactly `n` elements match `css`; returns them.
    async fn wait_count(&self, css: &str, n: usize) -> Result<Vec<Element>, String> {
        let deadline = Instant::now() + PAGE_WITHIN;
        loop {
            let all = ctx(self.client.find_all(Locator::Css(css)).await, css)?;
            if all.len() == n {
                return Ok(all);
            }
            check(Instant::now() < deadline, || {
                format!("{} of `{css}`, not {n}, after {PAGE_WITHIN:?}", all.len())
            })?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Scrolls `css` to the `block` (`start`, `end`) of the viewport.
    async fn scroll_to(&self, css: &str, block: &str) -> Result<(), String> {
        let script = "document.querySelector(arguments[0]).scrollIntoView({block: arguments[1]});";
        ctx(
            self.client
                .execute(script, vec![json!(css), json!(block)])
                .await,
            "scroll",
        )
        .map(drop)
    }

    /// With `LOAXA_SCREENSHOTS=DIR`, saves the page as `DIR/NAME.png` at a modest size
    /// (the README's pictures), first scrolling `scroll` = (element, `start`|`end`) into
    /// view; otherwise does nothing.
    async fn shot(&self, name: &str, scroll: Option<(&str, &str)>) -> Result<(), String> {
        let Some(dir) = std::env::var_os("LOAXA_SCREENSHOTS") else {
            return Ok(());
        };
        let (w, h) = SHOT_SIZE;
        // The window's size includes the browser's own frame: grow it by that much so
        // that the page itself gets `SHOT_SIZE`.
        ctx(self.client.set_window_size(w, h).await, "resize")?;
        let inner = ctx(
            self.client
                .execute("return [window.innerWidth, window.innerHeight];", vec![])
                .await,
            "viewport size",
        )?;
        let frame = |i: usize, want: u32| {
            let got = inner[i].as_u64().unwrap_or(u64::from(want));
            want + u32::try_from(u64::from(want).saturating_sub(got)).unwrap_or(0)
        };
        ctx(
            self.client.set_window_size(frame(0, w), frame(1, h)).await,
            "resize",
        )?;
        if let Some((css, block)) = scroll {
            self.scroll_to(css, block).await?;
        }
        let png = ctx(self.client.screenshot().await, "screenshot")?;
        let path = PathBuf::from(dir).join(format!("{name}.png"));
        std::fs::create_dir_all(path.parent().expect("dir"))
            .and_then(|()| std::fs::write(&path, png))
            .map_err(|e| format!("save {}: {e}", path.display()))
    }

    /// Ends the test: closes the session, or on failure saves a screenshot and panics
    /// with what the page showed.
    async fn finish(self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                let _ = self.client.close().await;
                // A screenshot from an earlier failing run would mislead.
                let _ = std::fs::remove_file(screenshot_path(self.test));
            }
            Err(why) => self.fail(&why).await,
        }
    }

    /// Saves a screenshot, ends the session and panics with what the page showed.
    async fn fail(self, why: &str) -> ! {
        let shot = screenshot_path(self.test);
        let saved = match self.client.screenshot().await {
            Ok(png) => std::fs::create_dir_all(shot.parent().expect("dir"))
                .and_then(|()| std::fs::write(&shot, png))
                .map(|()| format!("screenshot: {}", shot.display()))
                .unwrap_or_else(|e| format!("screenshot not saved: {e}")),
            Err(e) => format!("screenshot not taken: {e}"),
        };
        let text = self
            .client
            .execute(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|e| format!("(page text unavailable: {e})"));
        let _ = self.client.close().await;
        panic!("{why}\n{saved}\n--- page text ---\n{text}");
    }
}

fn screenshot_path(test: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/browser-screenshots")
        .join(format!("{test}.png"))
}

fn ctx<T, E: Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}
