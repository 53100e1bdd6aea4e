//! Campaigns: the calendar as an officer uses it (POSIX cron, approval, quiet hours,
//! conflicts), airing on a real UDP socket at the planned instant, the as-run log and the
//! airtime report agreeing with what was received, and a crash in the middle of an airing.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Timelike, Utc};
use common::*;
use serde_json::{Value, json};

const CLIP_1S: &str = "announce-vi-vbr-1s.mp3";
const CLIP_2S: &str = "announce-vi-48k-24bit-stereo.wav";
/// How late (or early) the first packet of an airing may reach the receiver.
const ON_TIME_MS: f64 = 20.0;

async fn setup(app: &TestApp, clip: &str) -> (Receiver, String, String) {
    let rx = Receiver::bind();
    app.create_area("xa-vinh-hoa", None).await;
    let cluster = app.create_cluster("xa-vinh-hoa", "pcmu", rx.addr()).await;
    let audio = app.upload_ok(&fixture(clip)).await;
    (rx, cluster, audio["id"].as_str().unwrap().to_string())
}

fn campaign(audio: &str, cron: &[&str]) -> Value {
    json!({
        "title": "Tuyên truyền chuyển đổi số",
        "topic": "chuyen-doi-so",
        "audio_ids": [audio],
        "targets": {"areas": ["xa-vinh-hoa"]},
        "schedule": {"cron": cron, "timezone": "Asia/Ho_Chi_Minh"}
    })
}

async fn create(app: &TestApp, body: &Value) -> Value {
    let r = app.post_json("/api/v1/campaigns", body).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v
}

async fn patch(app: &TestApp, id: &str, body: &Value) -> reqwest::Response {
    app.client
        .patch(app.url(&format!("/api/v1/campaigns/{id}")))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// `s1,s2,... * * * * *` (6 fields): the given seconds of every minute, `lead` seconds
/// and more from now, so the first airing has time to be prepared.
fn seconds_cron(lead: u64, every: u64, count: u64) -> (String, Vec<DateTime<Utc>>) {
    let now = Utc::now();
    let first = now.timestamp() as u64 + lead;
    let instants: Vec<u64> = (0..count).map(|i| first + i * every).collect();
    let secs: Vec<String> = instants.iter().map(|t| (t % 60).to_string()).collect();
    let planned = instants
        .iter()
        .map(|&t| DateTime::from_timestamp(t as i64, 0).unwrap())
        .collect();
    (format!("{} * * * * *", secs.join(",")), planned)
}

/// First packet (marker bit) arrival of each talkspurt, wall clock, and packets per spurt.
fn receive_spurts(socket: &UdpSocket, spurts: usize, limit: Duration) -> Vec<(SystemTime, usize)> {
    let mut out: Vec<(SystemTime, usize)> = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut quiet_since = Instant::now();
    while start.elapsed() < limit {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let at = SystemTime::now();
                let (h, _) = parse_rtp(&buf[..n]);
                if h.marker {
                    out.push((at, 0));
                }
                if let Some(last) = out.last_mut() {
                    last.1 += 1;
                }
                quiet_since = Instant::now();
            }
            Err(_) => {
                if out.len() >= spurts && quiet_since.elapsed() > Duration::from_millis(500) {
                    break;
                }
            }
        }
    }
    out
}

fn offset_ms(arrival: SystemTime, planned: DateTime<Utc>) -> f64 {
    let arrival: DateTime<Utc> = arrival.into();
    (arrival - planned).num_microseconds().unwrap() as f64 / 1000.0
}

#[tokio::test]
async fn a_campaign_waits_for_approval_and_its_occurrences_follow_posix_cron() {
    let app = spawn_app().await;
    let (_rx, _cluster, audio) = setup(&app, CLIP_1S).await;
    let c = create(&app, &campaign(&audio, &["0 6 * * 1-5", "0 17 * * 0"])).await;
    let id = c["id"].as_str().unwrap();
    assert_eq!(c["status"], "pending");
    assert_eq!(c["source"], "api");
    assert_eq!(c["conflicts"], json!([]));

    // 2030-01-06 is a Sunday. Weekdays at 06:00 and Sunday (dow 0) at 17:00, Hanoi time.
    let occ = app
        .json_ok(&format!(
            "/api/v1/campaigns/{id}/occurrences?from=2030-01-06T00:00:00%2B07:00&to=2030-01-13T00:00:00%2B07:00"
        ))
        .await;
    let local: Vec<&str> = occ["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["local"].as_str().unwrap())
        .collect();
    assert_eq!(
        local,
        [
            "2030-01-06T17:00:00+07:00",
            "2030-01-07T06:00:00+07:00",
            "2030-01-08T06:00:00+07:00",
            "2030-01-09T06:00:00+07:00",
            "2030-01-10T06:00:00+07:00",
            "2030-01-11T06:00:00+07:00",
        ]
    );
    assert_eq!(occ["occurrences"][1]["at"], "2030-01-06T23:00:00.000Z");

    let approved: Value = app
        .post_json(&format!("/api/v1/campaigns/{id}/approve"), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(approved["status"], "approved");
    // A new title keeps the approval; a new schedule needs it again.
    let r: Value = patch(&app, id, &json!({"title": "Chuyển đổi số 2030"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "approved", "{r}");
    let r: Value = patch(&app, id, &json!({"schedule": {"cron": ["30 6 * * *"]}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "pending", "{r}");
    let r: Value = patch(&app, id, &json!({"paused": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "paused");

    let r = app
        .client
        .delete(app.url(&format!("/api/v1/campaigns/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.get(&format!("/api/v1/campaigns/{id}")).await.status(),
        404
    );
}

#[tokio::test]
async fn a_bad_campaign_is_refused_naming_every_field() {
    let app = spawn_app().await;
    let (_rx, _cluster, audio) = setup(&app, CLIP_1S).await;
    let r = app
        .post_json(
            "/api/v1/campaigns",
            &json!({
                "title": "",
                "topic": "x",
                "audio_ids": [audio, "no-such-audio"],
                "targets": {"areas": ["nowhere"]},
                "schedule": {"cron": ["0 6 * * 1-5", "0 25 * * *"], "timezone": "Mars/Base",
                             "starts_on": "2026-02-30"},
                "priority": "emergency",
                "repeat": 0
            }),
        )
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in [
        "title",
        "audio_ids[1]",
        "targets.areas[0]",
        "schedule.cron[1]",
        "schedule.timezone",
        "schedule.starts_on",
        "priority",
        "repeat",
    ] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }
    assert!(
        app.json_ok("/api/v1/campaigns")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Unknown fields and unknown ids.
    let r = app
        .post_json("/api/v1/campaigns", &json!({"title": "x", "bogus": 1}))
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        app.get("/api/v1/campaigns/nope/occurrences").await.status(),
        404
    );
}

#[tokio::test]
async fn quiet_hours_refuse_campaigns_and_play_now_but_list_the_offending_times() {
    // Quiet hours around the current time in Hanoi, so play-now is refused whenever the
    // test runs; campaigns are checked against them too.
    let now = Utc::now().with_timezone(&chrono_tz::Asia::Ho_Chi_Minh);
    let start = now - chrono::TimeDelta::hours(1);
    let end = now + chrono::TimeDelta::hours(1);
    let quiet = format!(
        "{:02}:{:02}-{:02}:{:02}",
        start.hour(),
        start.minute(),
        end.hour(),
        end.minute()
    );
    let app = spawn_app_with_config_env("", &[("LOAXA_QUIET_HOURS", &quiet)]).await;
    let (_rx, cluster, audio) = setup(&app, CLIP_1S).await;
    let cron = format!("{} {} * * *", now.minute(), now.hour());
    let r = app
        .post_json("/api/v1/campaigns", &campaign(&audio, &[&cron]))
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "schedule.cron", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    let expected_time = format!("{:02}:{:02}:00 +07:00", now.hour(), now.minute());
    assert!(
        message.contains("quiet hours") && message.contains(&expected_time),
        "{message}"
    );

    let r = app
        .post_json(
            "/api/v1/broadcasts",
            &json!({"audio_ids": [audio], "targets": {"clusters": [cluster]}}),
        )
        .await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("quiet hours"),
        "{body}"
    );
}

#[tokio::test]
async fn overlapping_campaigns_on_the_same_clusters_are_reported() {
    let app = spawn_app().await;
    let (_rx, _cluster, audio) = setup(&app, CLIP_1S).await;
    let first = create(&app, &campaign(&audio, &["0 6 * * *"])).await;
    let mut second = campaign(&audio, &["0 6 * * 1"]);
    second["priority"] = json!("priority");
    let second = create(&app, &second).await;
    let conflicts = second["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{second}");
    assert_eq!(conflicts[0]["campaign_id"], first["id"]);
    assert_eq!(conflicts[0]["effect"], "cuts_in");
    assert_eq!(conflicts[0]["shared_clusters"], 1);
    // Another time of day does not conflict.
    let third = create(&app, &campaign(&audio, &["0 9 * * *"])).await;
    assert_eq!(third["conflicts"], json!([]));
}

#[tokio::test]
async fn an_approved_campaign_airs_within_20_ms_of_each_planned_instant_and_the_reports_agree() {
    let app = spawn_app().await;
    let (rx, _cluster, audio) = setup(&app, CLIP_1S).await;
    let (cron, planned) = seconds_cron(4, 2, 3);
    let c = create(&app, &campaign(&audio, &[&cron])).await;
    let id = c["id"].as_str().unwrap().to_string();
    let test_start = Utc::now();
    // Nothing airs before approval.
    app.post_json(&format!("/api/v1/campaigns/{id}/approve"), &json!({}))
        .await;

    let socket = rx.rtp.try_clone().unwrap();
    let spurts =
        tokio::task::spawn_blocking(move || receive_spurts(&socket, 3, Duration::from_secs(20)))
            .await
            .unwrap();
    assert_eq!(spurts.len(), 3, "airings received: {spurts:?}");
    for ((arrival, _), planned) in spurts.iter().zip(&planned) {
        let off = offset_ms(*arrival, *planned);
        eprintln!("planned {planned}, first packet {off:+.2} ms");
        assert!(
            (-1.0..ON_TIME_MS).contains(&off),
            "first packet {off:.2} ms from its planned instant {planned}"
        );
    }
    // Stop it before the next minute comes round.
    patch(&app, &id, &json!({"paused": true})).await;

    // The as-run log: one airing per instant, planned and actual, done, packets as received.
    let from = test_start.to_rfc3339();
    let log = app
        .json_ok(&format!("/api/v1/broadcasts?from={}", urlencode(&from)))
        .await;
    let mut airings: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["campaign_id"] == id.as_str())
        .collect();
    airings.sort_by_key(|b| b["planned_at"].as_str().unwrap().to_string());
    assert_eq!(airings.len(), 3, "{log}");
    for ((airing, planned), (_, packets)) in airings.iter().zip(&planned).zip(&spurts) {
        let b = app
            .wait_status(
                airing["id"].as_str().unwrap(),
                "done",
                Duration::from_secs(5),
            )
            .await;
        assert_eq!(b["status"], "done", "{b}");
        let at: DateTime<Utc> = b["planned_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(at, *planned);
        assert_eq!(b["topic"], "chuyen-doi-so");
        assert_eq!(b["clusters"][0]["packets_sent"], *packets as u64);
    }

    // The airtime report counts what went out: packets × 20 ms.
    let received_ms: usize = spurts.iter().map(|(_, n)| n * 20).sum();
    let to = (Utc::now() + chrono::TimeDelta::minutes(1)).to_rfc3339();
    let report = app
        .json_ok(&format!(
            "/api/v1/reports/airtime?from={}&to={}&group_by=campaign",
            urlencode(&from),
            urlencode(&to)
        ))
        .await;
    assert_eq!(report["rows"][0]["key"], id.as_str(), "{report}");
    assert_eq!(report["rows"][0]["airings"], 3);
    let minutes = report["rows"][0]["minutes"].as_f64().unwrap();
    assert!(
        (minutes - received_ms as f64 / 60_000.0).abs() < 0.006,
        "{minutes}"
    );
    let csv = app
        .client
        .get(app.url(&format!(
            "/api/v1/reports/airtime?from={}&to={}&group_by=topic&area=xa-vinh-hoa",
            urlencode(&from),
            urlencode(&to)
        )))
        .bearer_auth(TOKEN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let expected = format!(
        "topic,label,minutes,airings,clusters\r\nchuyen-doi-so,chuyen-doi-so,{:.2},3,1\r\n",
        received_ms as f64 / 60_000.0
    );
    assert_eq!(text, expected);
}

#[tokio::test]
async fn a_crash_mid_airing_leaves_it_interrupted_and_the_calendar_carries_on_after_restart() {
    let mut app = spawn_app_with_config("[schedule]\napproval_required = false\n").await;
    let (rx, _cluster, audio) = setup(&app, CLIP_2S).await;
    let c = create(&app, &campaign(&audio, &["*/3 * * * * *"])).await;
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(c["status"], "approved");
    let test_start = Utc::now().to_rfc3339();

    // Wait for an airing to be on air, then kill -9 the daemon.
    let deadline = Instant::now() + Duration::from_secs(10);
    let playing = loop {
        let log = app
            .json_ok(&format!(
                "/api/v1/broadcasts?from={}",
                urlencode(&test_start)
            ))
            .await;
        if let Some(b) = log
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["status"] == "playing")
        {
            break b["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "nothing went on air: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut child = app.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // Down long enough for at least one planned instant to pass.
    tokio::time::sleep(Duration::from_secs(4)).await;
    while rx.rtp.recv(&mut [0u8; 2048]).is_ok() {}

    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    drop(app);
    let app = spawn_app_with(
        dir,
        &{
            // Same settings as before the crash.
            let p = std::env::temp_dir().join(format!("loaxa-crash-{}.toml", std::process::id()));
            std::fs::write(&p, "[schedule]\napproval_required = false\n").unwrap();
            p
        },
        &[],
    )
    .await;

    let b = app.json_ok(&format!("/api/v1/broadcasts/{playing}")).await;
    assert_eq!(b["status"], "interrupted", "{b}");
    let c = app.json_ok(&format!("/api/v1/campaigns/{id}")).await;
    assert_eq!(c["status"], "approved");
    assert_eq!(c["schedule"]["cron"], json!(["*/3 * * * * *"]));
    assert_eq!(c["next_occurrences"].as_array().unwrap().len(), 5);

    // The calendar carries on: the next airings come on time, on the same socket (the
    // first on-time one may queue behind the late catch-up: equal priorities queue).
    let socket = rx.rtp.try_clone().unwrap();
    let spurts =
        tokio::task::spawn_blocking(move || receive_spurts(&socket, 5, Duration::from_secs(20)))
            .await
            .unwrap();
    let on_time: Vec<f64> = spurts
        .iter()
        .map(|(at, _)| {
            let at: DateTime<Utc> = (*at).into();
            let planned = DateTime::from_timestamp(at.timestamp() - at.timestamp() % 3, 0).unwrap();
            offset_ms(at.into(), planned)
        })
        .filter(|off| (-1.0..ON_TIME_MS).contains(off))
        .collect();
    assert!(on_time.len() >= 2, "airings after the restart: {spurts:?}");
    patch(&app, &id, &json!({"paused": true})).await;

    // Every planned instant appears once: none lost, none duplicated; what passed while
    // the daemon was down is late (the most recent) or missed.
    let log = app
        .json_ok(&format!(
            "/api/v1/broadcasts?from={}",
            urlencode(&test_start)
        ))
        .await;
    let mine: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["campaign_id"] == id.as_str())
        .collect();
    let mut planned: Vec<&str> = mine
        .iter()
        .map(|b| b["planned_at"].as_str().unwrap())
        .collect();
    planned.sort();
    let before = planned.len();
    planned.dedup();
    assert_eq!(planned.len(), before, "duplicated airings: {log}");
    let statuses: Vec<&str> = mine.iter().map(|b| b["status"].as_str().unwrap()).collect();
    assert!(statuses.contains(&"interrupted"), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .any(|s| *s == "late" || *s == "missed" || *s == "playing"),
        "nothing recorded for the downtime: {statuses:?}"
    );
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn approval_and_resume_owe_nothing_for_the_wait_and_pausing_withdraws_what_was_prepared() {
    let app = spawn_app().await;
    let (rx, _cluster, audio) = setup(&app, CLIP_1S).await;
    let c = create(&app, &campaign(&audio, &["*/2 * * * * *"])).await;
    let id = c["id"].as_str().unwrap().to_string();
    let start = Utc::now().to_rfc3339();
    // Pending for a few instants: they were never owed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.post_json(&format!("/api/v1/campaigns/{id}/approve"), &json!({}))
        .await;
    let socket = rx.rtp.try_clone().unwrap();
    let spurts =
        tokio::task::spawn_blocking(move || receive_spurts(&socket, 1, Duration::from_secs(5)))
            .await
            .unwrap();
    assert!(!spurts.is_empty(), "nothing aired after approval");
    // Pause: what was recorded ahead (up to 10 s) is withdrawn, nothing more airs.
    let r: Value = patch(&app, &id, &json!({"paused": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "paused", "{r}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    rx.rtp.set_nonblocking(true).unwrap();
    while rx.rtp.recv(&mut [0u8; 2048]).is_ok() {}
    rx.rtp.set_nonblocking(false).unwrap();
    let quiet = rx.rtp.recv(&mut [0u8; 2048]).is_err()
        && rx.rtp.recv(&mut [0u8; 2048]).is_err()
        && rx.rtp.recv(&mut [0u8; 2048]).is_err();
    assert!(quiet, "still airing 1.8 s after the pause");

    let log = app
        .json_ok(&format!("/api/v1/broadcasts?from={}", urlencode(&start)))
        .await;
    let statuses: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["campaign_id"] == id.as_str())
        .map(|b| b["status"].as_str().unwrap())
        .collect();
    assert!(
        !statuses.iter().any(|s| *s == "missed" || *s == "late"),
        "owed nothing for the wait: {statuses:?}"
    );
    assert!(statuses.contains(&"cancelled"), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| ["done", "cancelled", "playing"].contains(s)),
        "{statuses:?}"
    );
}
