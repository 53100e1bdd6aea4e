//! Live relays ("tiếp sóng") against a local radio station started by each test: a real
//! HTTP server streaming MP3 and AAC at real-time rate from wherever its programme is
//! now (so the relay joins mid-frame), and misbehaving on cue: it pauses, sends silence,
//! drops the connection, or answers with an HTML page. The relay's audio is received on
//! real UDP sockets and compared with the station's, decoded independently by ffmpeg.

mod common;
#[path = "common/station.rs"]
mod station;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use station::{Station, collect, decoded, latencies_ms};

/// Relay settings short enough for tests.
fn config_text(station: SocketAddr, fallback_after_s: f64) -> String {
    format!(
        "[relay]\nallowed_hosts = [\"127.0.0.1\"]\nbuffer_ms = 300\nstall_s = 1.0\n\
         silence_s = 1.5\nfallback_after_s = {fallback_after_s}\nreconnect_max_s = 1.0\n\
         connect_timeout_s = 2.0\n[health]\nwebhooks = [\"http://{station}/hook\"]\n\
         webhook_attempts = 1\n[schedule]\napproval_required = false\n"
    )
}

fn pcmu_audio(packets: &[Datagram]) -> Vec<f32> {
    packets
        .iter()
        .flat_map(|d| {
            let (_, payload) = parse_rtp(&d.bytes);
            payload
                .iter()
                .map(|&b| f32::from(loaxa::codec::g711::ulaw_decode(b)) / 32768.0)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Where in `reference` (looped) the `received` envelope fits best, in windows, and how
/// well.
fn best_fit(received: &[f64], reference: &[f64]) -> (usize, f64) {
    let looped: Vec<f64> = reference.iter().chain(reference).copied().collect();
    let n = received.len().min(reference.len());
    (0..reference.len())
        .map(|lag| (lag, correlation(&looped[lag..lag + n], &received[..n])))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap()
}

async fn setup(station: &Station) -> (TestApp, Receiver, String) {
    setup_with(station, 2.5).await
}

async fn setup_with(station: &Station, fallback_after_s: f64) -> (TestApp, Receiver, String) {
    let app = spawn_app_with_config(&config_text(station.addr, fallback_after_s)).await;
    app.create_area("xa", None).await;
    let rx = Receiver::bind();
    let cluster = app.create_cluster("xa", "pcmu", rx.addr()).await;
    (app, rx, cluster)
}

async fn relay(app: &TestApp, cluster: &str, url: &str, duration_s: u32) -> String {
    let r = app
        .post_json(
            "/api/v1/broadcasts",
            &json!({"relay": {"url": url, "duration_s": duration_s},
                    "targets": {"clusters": [cluster]}, "priority": "live"}),
        )
        .await;
    assert_eq!(
        r.status(),
        202,
        "relay: {}",
        r.text().await.unwrap_or_default()
    );
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn events(b: &Value) -> Vec<(String, String)> {
    b["relay"]["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["kind"].as_str().unwrap_or("").to_string(),
                        e["detail"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn finished(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b = app.json_ok(&format!("/api/v1/broadcasts/{id}")).await;
        let ended = events(&b)
            .iter()
            .any(|(k, _)| k == "ended" || k == "stopped");
        let over = ["done", "failed", "cancelled", "interrupted"]
            .contains(&b["status"].as_str().unwrap_or(""));
        if (ended && over) || Instant::now() > deadline {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_live_mp3_stream_airs_inside_its_window_and_sounds_like_the_station() {
    let station = Station::start().await;
    let (app, rx, cluster) = setup(&station).await;
    let asked = Instant::now();
    let receiving = tokio::task::spawn_blocking(move || collect(&rx, Duration::from_secs(6)));
    let id = relay(&app, &cluster, &station.url("/live.mp3"), 4).await;
    let packets = receiving.await.unwrap();

    assert!(packets.len() > 120, "only {} packets aired", packets.len());
    // The window is 4 s from the request: the stream goes on, the air stops.
    let last = packets.last().unwrap().at - asked;
    assert!(
        last >= Duration::from_millis(3700) && last <= Duration::from_millis(4500),
        "last packet {last:?} after the request, for a 4 s window"
    );
    let headers: Vec<RtpHeader> = packets.iter().map(|d| parse_rtp(&d.bytes).0).collect();
    assert!(
        headers
            .iter()
            .all(|h| h.payload_type == 0 && h.version == 2)
    );
    assert!(headers[0].marker, "the relay starts a talkspurt");
    for w in headers.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1), "sequence gap");
    }

    // The station's audio, decoded by ffmpeg, against what the cluster received.
    let reference = envelope(&decoded(&station.mp3_path()), 160);
    let received = envelope(&pcmu_audio(&packets), 160);
    let (lag, fit) = best_fit(&received, &reference);
    assert!(
        fit > 0.9,
        "received audio correlates {fit:.3} with the stream"
    );

    // Latency, stream in to RTP out: each packet's audio was sent by the station at a
    // known instant (real-time pacing from where the connection joined).
    let conn = station
        .served("/live.mp3")
        .first()
        .cloned()
        .expect("a connection");
    let arrivals: Vec<Instant> = packets.iter().map(|d| d.at).collect();
    let latencies = latencies_ms(&arrivals, lag, reference.len(), &conn);
    let median = latencies[latencies.len() / 2];
    println!(
        "relay latency, stream in to RTP out: median {median:.0} ms, p90 {:.0} ms (buffer_ms = 300, correlation {fit:.3})",
        latencies[latencies.len() * 9 / 10]
    );
    assert!(median < 1500.0, "median latency {median:.0} ms");

    let b = finished(&app, &id).await;
    assert_eq!(b["status"], "done", "{b}");
    let ev = events(&b);
    assert!(ev.iter().any(|(k, _)| k == "connected"), "{ev:?}");
    assert!(
        ev.iter()
            .any(|(k, d)| k == "ended" && d == "the window ended"),
        "{ev:?}"
    );
    assert_eq!(b["relay"]["url"], station.url("/live.mp3"));
}

#[tokio::test]
async fn an_aac_stream_joined_mid_frame_is_relayed() {
    let station = Station::start().await;
    let (app, rx, cluster) = setup(&station).await;
    let receiving = tokio::task::spawn_blocking(move || collect(&rx, Duration::from_secs(4)));
    let id = relay(&app, &cluster, &station.url("/live.aac"), 3).await;
    let packets = receiving.await.unwrap();
    assert!(packets.len() > 80, "only {} packets aired", packets.len());
    let reference = envelope(&decoded(&station.dir.path().join("live.aac")), 160);
    let (_, fit) = best_fit(&envelope(&pcmu_audio(&packets), 160), &reference);
    assert!(
        fit > 0.85,
        "received audio correlates {fit:.3} with the AAC stream"
    );
    let b = finished(&app, &id).await;
    assert_eq!(b["status"], "done", "{b}");
}

#[tokio::test]
async fn a_dropped_connection_is_detected_reconnected_and_the_programme_goes_on() {
    let station = Station::start().await;
    let (app, rx, cluster) = setup(&station).await;
    let receiving = tokio::task::spawn_blocking(move || collect(&rx, Duration::from_secs(6)));
    let id = relay(&app, &cluster, &station.url("/drop.mp3"), 5).await;
    let packets = receiving.await.unwrap();
    let b = finished(&app, &id).await;
    let ev = events(&b);
    assert!(
        ev.iter()
            .any(|(k, d)| k == "fault" && d.contains("closed the stream")),
        "{ev:?}"
    );
    assert!(
        ev.iter().filter(|(k, _)| k == "connected").count() >= 2,
        "{ev:?}"
    );
    assert!(
        station.served("/drop.mp3").len() >= 2,
        "the relay reconnected"
    );
    // Audio before and after the drop: a gap, then the stream again.
    let gap = packets
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap_or_default();
    assert!(gap > Duration::from_millis(200), "no gap ({gap:?})?");
    let after: usize = {
        let split = packets
            .windows(2)
            .position(|w| w[1].at - w[0].at == gap)
            .unwrap();
        packets.len() - split - 1
    };
    assert!(after > 50, "only {after} packets after the reconnect");
    assert_eq!(b["status"], "done", "{b}");
}

#[tokio::test]
async fn a_stalled_connection_is_detected_within_seconds_and_the_relay_recovers() {
    let station = Station::start().await;
    // Long enough a fallback delay that the reconnect wins the race.
    let (app, rx, cluster) = setup_with(&station, 6.0).await;
    let receiving = tokio::task::spawn_blocking(move || collect(&rx, Duration::from_secs(7)));
    let id = relay(&app, &cluster, &station.url("/stall.mp3"), 6).await;
    let packets = receiving.await.unwrap();
    let b = finished(&app, &id).await;
    let ev = events(&b);
    let stalled = b["relay"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "fault")
        .unwrap_or_else(|| panic!("no fault in {ev:?}"))
        .clone();
    assert!(
        stalled["detail"].as_str().unwrap().starts_with("stalled"),
        "{stalled}"
    );
    // The stall began 1.5 s into the first connection; stall_s is 1 s.
    let served = station.served("/stall.mp3");
    assert!(served.len() >= 2, "no reconnect");
    let connected_at = b["relay"]["events"].as_array().unwrap()[0]["at"].clone();
    let t = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let detected_after = t(&stalled["at"]) - t(&connected_at);
    assert!(
        detected_after.num_milliseconds() <= 1500 + 1000 + 800,
        "stall detected {detected_after} after connecting"
    );
    assert!(
        ev.iter().any(|(k, _)| k == "recovered"),
        "the stream came back: {ev:?}"
    );
    assert!(packets.len() > 150, "{} packets", packets.len());
    assert_eq!(b["status"], "done", "{b}");
}

#[tokio::test]
async fn dead_air_falls_back_to_the_clip_and_raises_an_alert() {
    let station = Station::start().await;
    let (app, rx, cluster) = setup(&station).await;
    let clip = app.upload_ok(&fixture("announce-vi-8k.wav")).await;
    let clip_id = clip["id"].as_str().unwrap().to_string();
    let receiving = tokio::task::spawn_blocking(move || collect(&rx, Duration::from_secs(9)));
    let r = app
        .post_json(
            "/api/v1/broadcasts",
            &json!({"relay": {"url": station.url("/silent.mp3"), "duration_s": 8,
                              "fallback_audio_id": clip_id},
                    "targets": {"clusters": [cluster]}}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let packets = receiving.await.unwrap();
    let b = finished(&app, &id).await;
    let ev = events(&b);
    assert!(
        ev.iter()
            .any(|(k, d)| k == "fault" && d.starts_with("dead air")),
        "{ev:?}"
    );
    assert!(ev.iter().any(|(k, _)| k == "fallback"), "{ev:?}");
    assert!(
        b["detail"].as_str().unwrap_or("").contains("fell back"),
        "{b}"
    );
    // The clip aired: somewhere in what the cluster received is the announcement.
    let reference = envelope(&reference_audio(&fixture("announce-vi-8k.wav"), 8000), 160);
    let received = envelope(&pcmu_audio(&packets), 160);
    // (The clip is the last thing aired: the stream stays muted while it is dead.)
    let best = (0..=received.len().saturating_sub(reference.len()))
        .map(|lag| correlation(&received[lag..lag + reference.len()], &reference))
        .fold(f64::MIN, f64::max);
    assert!(best > 0.9, "the fallback clip correlates {best:.3}");
    // And the health webhook heard of it.
    let hooks = station.hooks.lock().unwrap().clone();
    assert!(
        hooks.iter().any(|h| h["event"] == "relay.fallback"
            && h["action"] == "fallback"
            && h["broadcast_id"] == id),
        "{hooks:?}"
    );
    assert_eq!(b["status"], "done", "{b}");
}

#[tokio::test]
async fn an_html_page_is_a_failure_never_aired_and_without_fallback_the_relay_stops() {
    let station = Station::start().await;
    let (app, rx, cluster) = setup(&station).await;
    let rx2 = Receiver::bind();
    let cluster2 = app.create_cluster("xa", "pcmu", rx2.addr()).await;
    let receiving = tokio::task::spawn_blocking(move || collect(&rx, Duration::from_secs(5)));
    let receiving2 = tokio::task::spawn_blocking(move || collect(&rx2, Duration::from_secs(5)));
    let page = relay(&app, &cluster, &station.url("/error-page"), 20).await;
    let fake = relay(&app, &cluster2, &station.url("/fake.mp3"), 20).await;
    let packets = receiving.await.unwrap();
    let packets2 = receiving2.await.unwrap();
    assert!(
        packets.is_empty(),
        "{} packets of an HTML page aired",
        packets.len()
    );
    assert!(
        packets2.is_empty(),
        "{} packets of a fake stream aired",
        packets2.len()
    );
    for (id, why) in [(page, "Content-Type `text/html"), (fake, "HTML page")] {
        let b = finished(&app, &id).await;
        let ev = events(&b);
        assert!(
            ev.iter()
                .any(|(k, d)| k == "fault" && d.contains("not an audio stream") && d.contains(why)),
            "{ev:?}"
        );
        assert_eq!(b["status"], "failed", "{b}");
        assert!(
            b["detail"]
                .as_str()
                .unwrap_or("")
                .contains("no fallback clip"),
            "{b}"
        );
    }
    let hooks = station.hooks.lock().unwrap().clone();
    assert!(
        hooks.iter().filter(|h| h["action"] == "stopped").count() >= 2,
        "{hooks:?}"
    );
}

#[tokio::test]
async fn a_relay_campaign_airs_only_inside_its_window() {
    let station = Station::start().await;
    let (app, rx, cluster) = setup(&station).await;
    // A rule for one instant, 3 s from now (seconds-first cron, in UTC).
    let at = chrono::Utc::now() + chrono::TimeDelta::seconds(3);
    let at = chrono::DurationRound::duration_trunc(at, chrono::TimeDelta::seconds(1)).unwrap();
    let rule = at.format("%S %M %H %d %m *").to_string();
    let planned = Instant::now() + (at - chrono::Utc::now()).to_std().unwrap();
    let receiving = tokio::task::spawn_blocking(move || collect(&rx, Duration::from_secs(8)));
    let r = app
        .post_json(
            "/api/v1/campaigns",
            &json!({"title": "Tiếp sóng Đài Tiếng nói Việt Nam", "topic": "tiep-song",
                    "relay": {"url": station.url("/live.mp3"), "duration_s": 3},
                    "targets": {"clusters": [cluster]},
                    "schedule": {"cron": [rule], "timezone": "UTC"}}),
        )
        .await;
    let body = r.text().await.unwrap_or_default();
    let campaign: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(campaign["status"], "approved", "{body}");
    assert_eq!(campaign["relay"]["duration_s"], 3, "{body}");
    let packets = receiving.await.unwrap();
    assert!(packets.len() > 100, "only {} packets aired", packets.len());
    let first = packets[0].at;
    let last = packets.last().unwrap().at;
    // Nothing before the window (the relay connected early to fill its cushion)...
    assert!(
        first + Duration::from_millis(30) >= planned,
        "first packet {:?} before the window",
        planned - first
    );
    // ...and nothing after it, although the station goes on.
    assert!(
        last <= planned + Duration::from_millis(3300),
        "last packet {:?} after the window opened",
        last - planned
    );
    let id = campaign["id"].as_str().unwrap();
    let airings = app.json_ok("/api/v1/broadcasts").await;
    let airing = airings
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["campaign_id"] == id)
        .expect("the as-run log holds the airing")
        .clone();
    let b = finished(&app, airing["id"].as_str().unwrap()).await;
    assert_eq!(b["status"], "done", "{b}");
    assert_eq!(b["topic"], "tiep-song");
}

#[tokio::test]
async fn relay_requests_are_checked_whole() {
    let station = Station::start().await;
    let app = spawn_app_with_config_env(
        &config_text(station.addr, 2.5),
        &[("LOAXA_QUIET_HOURS", "22:00-05:00")],
    )
    .await;
    app.create_area("xa", None).await;
    let rx = Receiver::bind();
    let cluster = app.create_cluster("xa", "pcmu", rx.addr()).await;
    let audio = app.upload_ok(&fixture("announce-vi-8k.wav")).await;
    let cases = [
        (
            json!({"relay": {"url": "http://radio.example.org/live.mp3", "duration_s": 60}}),
            "relay.url",
            "not in relay.allowed_hosts",
        ),
        (
            json!({"relay": {"url": "https://127.0.0.1/live.mp3", "duration_s": 60}}),
            "relay.url",
            "only http://",
        ),
        (
            json!({"relay": {"url": station.url("/live.mp3"), "duration_s": 0}}),
            "relay.duration_s",
            "between 1 and 86400",
        ),
        (
            json!({"relay": {"url": station.url("/live.mp3"), "duration_s": 5},
                   "audio_ids": [audio["id"]]}),
            "audio_ids",
            "not both",
        ),
        (
            json!({"relay": {"url": station.url("/live.mp3"), "duration_s": 5,
                             "fallback_audio_id": "no-such-audio"}}),
            "relay.fallback_audio_id",
            "does not exist",
        ),
        (
            json!({"relay": {"url": station.url("/live.mp3"), "duration_s": 5, "bitrate": 1}}),
            "relay",
            "unknown field",
        ),
    ];
    for (mut body, field, message) in cases {
        body["targets"] = json!({"clusters": [cluster]});
        let r = app.post_json("/api/v1/broadcasts", &body).await;
        let status = r.status();
        let problem: Value = r.json().await.unwrap();
        assert_eq!(status, 422, "{body}: {problem}");
        let text = problem.to_string();
        assert!(
            text.contains(field) && text.contains(message),
            "{body}: {problem}"
        );
    }
    // A campaign whose relay window runs into quiet hours (22:00 in Vietnam) is refused.
    let r = app
        .post_json(
            "/api/v1/campaigns",
            &json!({"title": "Tiếp sóng tối", "topic": "tiep-song",
                    "relay": {"url": station.url("/live.mp3"), "duration_s": 3600},
                    "targets": {"clusters": [cluster]},
                    "schedule": {"cron": ["30 21 * * *"]}}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    assert!(problem.to_string().contains("quiet hours"), "{problem}");
    // Nothing was aired or recorded by the refused requests.
    let log = app.json_ok("/api/v1/broadcasts").await;
    assert_eq!(log.as_array().unwrap().len(), 0, "{log}");
}

#[tokio::test]
async fn a_relay_campaign_can_come_from_a_schedule_file() {
    let station = Station::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("schedules")).unwrap();
    std::fs::write(
        dir.path().join("schedules/tiep-song.toml"),
        format!(
            "title = \"Tiếp sóng Đài TNVN\"\nrelay = {{ url = \"{}\", duration_s = 1800 }}\n\
             targets = {{ areas = [\"xa\"] }}\npriority = \"live\"\n\
             [schedule]\ncron = [\"30 5 * * *\"]\n",
            station.url("/live.mp3")
        ),
    )
    .unwrap();
    let config = dir.path().join("loaxa.toml");
    std::fs::write(&config, config_text(station.addr, 2.5)).unwrap();
    let app = spawn_app_with(dir, &config, &[]).await;
    // Its area does not exist yet, so the file waits; created, a SIGHUP loads it.
    app.create_area("xa", None).await;
    let pid = app.child.as_ref().unwrap().id().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status();
    assert!(hup.unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let campaigns = loop {
        let campaigns = app.json_ok("/api/v1/campaigns").await;
        if campaigns.as_array().is_some_and(|a| !a.is_empty()) || Instant::now() > deadline {
            break campaigns;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let c = &campaigns[0];
    assert_eq!(c["source"], "file", "{campaigns}");
    assert_eq!(c["relay"]["url"], station.url("/live.mp3"), "{campaigns}");
    assert_eq!(c["relay"]["duration_s"], 1800);
    assert_eq!(c["audio_ids"].as_array().unwrap().len(), 0);
}
