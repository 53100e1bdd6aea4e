//! Emergencies on real UDP sockets: they cut in over a scheduled broadcast at the next
//! tick (which resumes by its policy afterwards), air in quiet hours, cancel at once, come
//! from JSON or from CAP 1.2 alerts (Actual airs; Test does not; duplicates, Update,
//! Cancel, expired and malformed alerts), and leave an audit trail.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Timelike;
use common::*;
use serde_json::{Value, json};

const LONG: &str = "announce-vi.mp3";
const SHORT: &str = "announce-vi-vbr-1s.mp3";
/// Attention tone 2 s + gap 0.5 s, in 20 ms packets.
const TONE_PACKETS: usize = 100 + 25;

async fn fleet(app: &TestApp) -> (Receiver, String) {
    app.create_area("tinh", None).await;
    app.create_area("xa-vinh-hoa", Some("tinh")).await;
    let rx = Receiver::bind();
    let cluster = app.create_cluster("xa-vinh-hoa", "pcmu", rx.addr()).await;
    (rx, cluster)
}

async fn emergency(app: &TestApp, body: &Value) -> (u16, Value) {
    let r = app.post_json("/api/v1/emergency", body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn cap(app: &TestApp, xml: &str) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/api/v1/emergency"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/cap+xml")
        .body(xml.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn alert(identifier: &str, status: &str, msg_type: &str, extra: &str, expires_in_h: i64) -> String {
    let now = chrono::Utc::now().with_timezone(&chrono::FixedOffset::east_opt(7 * 3600).unwrap());
    let sent = now.format("%Y-%m-%dT%H:%M:%S+07:00");
    let expires = (now + chrono::TimeDelta::hours(expires_in_h)).format("%Y-%m-%dT%H:%M:%S+07:00");
    let audio =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(fixture(SHORT)).unwrap());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>canhbao@kttv.gov.vn</sender>
  <sent>{sent}</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>
  {extra}
  <info>
    <category>Met</category>
    <event>Bão số 9</event>
    <urgency>Immediate</urgency>
    <severity>Extreme</severity>
    <certainty>Observed</certainty>
    <expires>{expires}</expires>
    <resource>
      <resourceDesc>Thông báo khẩn</resourceDesc>
      <mimeType>audio/mpeg</mimeType>
      <derefUri>{audio}</derefUri>
    </resource>
    <area>
      <areaDesc>Xã Vĩnh Hòa</areaDesc>
      <geocode><valueName>loaxa</valueName><value>xa-vinh-hoa</value></geocode>
    </area>
  </info>
</alert>"#
    )
}

/// RTP packets on `rx` until `quiet` passes without one, with arrival times.
fn drain(rx: &Receiver, quiet: Duration, limit: Duration) -> Vec<(Instant, RtpHeader)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut last = Instant::now();
    while start.elapsed() < limit && (out.is_empty() || last.elapsed() < quiet) {
        if let Ok(n) = rx.rtp.recv(&mut buf) {
            last = Instant::now();
            out.push((last, parse_rtp(&buf[..n]).0));
        }
    }
    out
}

#[tokio::test]
async fn an_emergency_cuts_in_at_the_next_tick_and_the_scheduled_broadcast_restarts_after() {
    let app = spawn_app().await;
    let (rx, cluster) = fleet(&app).await;
    let long = app.upload_ok(&fixture(LONG)).await;
    let short = app.upload_ok(&fixture(SHORT)).await;
    let scheduled = app
        .broadcast(long["id"].as_str().unwrap(), &[&cluster])
        .await;
    app.wait_status(&scheduled, "playing", Duration::from_secs(5))
        .await;
    // Let it air a while, and wait for the short clip to be prepared for PCMU.
    tokio::time::sleep(Duration::from_millis(800)).await;

    // What is queued on the socket so far is the scheduled broadcast; from here on
    // the receiver timestamps every packet as it comes.
    rx.rtp.set_nonblocking(true).unwrap();
    while rx.rtp.recv(&mut [0u8; 2048]).is_ok() {}
    rx.rtp.set_nonblocking(false).unwrap();
    let receiving =
        std::thread::spawn(move || drain(&rx, Duration::from_millis(800), Duration::from_secs(30)));
    let (status, body) = emergency(
        &app,
        &json!({"audio_id": short["id"], "targets": {"areas": ["tinh"]}}),
    )
    .await;
    let answered = Instant::now();
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();

    let packets = tokio::task::spawn_blocking(move || receiving.join().unwrap())
        .await
        .unwrap();
    // The cut-in: the first marker, on the same SSRC.
    let ssrc = packets[0].1.ssrc;
    assert!(packets.iter().all(|(_, h)| h.ssrc == ssrc), "one session");
    let cut = packets
        .iter()
        .position(|(_, h)| h.marker)
        .expect("no cut-in marker");
    let latency = packets[cut].0.saturating_duration_since(answered);
    eprintln!("emergency first packet {latency:?} after the 202");
    assert!(latency < Duration::from_millis(500), "{latency:?}");
    // Sequence numbers run on across the switch.
    for w in packets.windows(2) {
        assert_eq!(w[1].1.sequence, w[0].1.sequence.wrapping_add(1));
    }

    app.wait_status(&id, "done", Duration::from_secs(10)).await;
    let e = app.json_ok(&format!("/api/v1/emergency/{id}")).await;
    assert_eq!(e["status"], "done", "{e}");
    assert_eq!(e["source"], "user");
    assert_eq!(e["priority"], "emergency");
    let short_packets = (short["duration_ms"].as_u64().unwrap() as usize * 8).div_ceil(160);
    assert_eq!(
        e["clusters"][0]["packets_sent"].as_u64().unwrap() as usize,
        TONE_PACKETS + short_packets,
        "attention tone, gap, then the message"
    );
    // The scheduled broadcast was interrupted by it, recorded, and restarts afterwards.
    let b = app
        .json_ok(&format!("/api/v1/broadcasts/{scheduled}"))
        .await;
    let cuts = b["clusters"][0]["interruptions"].as_array().unwrap();
    assert_eq!(cuts.len(), 1, "{b}");
    assert_eq!(cuts[0]["by"], id.as_str());
    assert_eq!(cuts[0]["policy"], "restart");
    let markers: Vec<usize> = packets
        .iter()
        .enumerate()
        .filter(|(_, (_, h))| h.marker)
        .map(|(i, _)| i)
        .collect();
    assert!(
        packets[cut + TONE_PACKETS + short_packets].1.marker,
        "markers at {markers:?}, cut at {cut}, {} packets; \
         the scheduled broadcast comes back with a marker right after the emergency",
        packets.len()
    );
    // Restarted from the beginning, it then airs in full.
    let long_packets = (long["duration_ms"].as_u64().unwrap() as usize * 8).div_ceil(160);
    assert_eq!(
        packets.len() - (cut + TONE_PACKETS + short_packets),
        long_packets
    );
    let b = app
        .wait_status(&scheduled, "done", Duration::from_secs(5))
        .await;
    assert_eq!(b["status"], "done", "{b}");

    let audit = app.json_ok("/api/v1/audit").await;
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "emergency.start")
        .expect("audited");
    assert_eq!(entry["target"], id.as_str());
    assert_eq!(entry["actor"], "admin");
}

#[tokio::test]
async fn an_emergency_airs_in_quiet_hours_when_a_scheduled_broadcast_may_not_and_cancels_at_once() {
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Ho_Chi_Minh);
    let (start, end) = (
        now - chrono::TimeDelta::hours(1),
        now + chrono::TimeDelta::hours(1),
    );
    let quiet = format!(
        "{:02}:{:02}-{:02}:{:02}",
        start.hour(),
        start.minute(),
        end.hour(),
        end.minute()
    );
    let app = spawn_app_with_config_env("", &[("LOAXA_QUIET_HOURS", &quiet)]).await;
    let (rx, cluster) = fleet(&app).await;
    let long = app.upload_ok(&fixture(LONG)).await;
    let r = app
        .post_json(
            "/api/v1/broadcasts",
            &json!({"audio_ids": [long["id"]], "targets": {"clusters": [cluster]}}),
        )
        .await;
    assert_eq!(r.status(), 409, "a scheduled broadcast in quiet hours");

    let (status, body) = emergency(
        &app,
        &json!({"audio_id": long["id"], "targets": {"areas": ["xa-vinh-hoa"]}, "repeat": 2,
                "interval_s": 1}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    app.wait_status(id, "playing", Duration::from_secs(5)).await;
    let mut buf = [0u8; 2048];
    assert!(
        rx.rtp.recv(&mut buf).is_ok(),
        "the emergency airs in quiet hours"
    );

    let r = app
        .post_json(&format!("/api/v1/emergency/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["status"], "cancelled");
    assert_eq!(e["clusters"][0]["status"], "cancelled");
    // Nothing more than what was in flight after the cancel.
    std::thread::sleep(Duration::from_millis(100));
    while rx.rtp.recv(&mut buf).is_ok() {}
    assert!(
        rx.rtp.recv(&mut buf).is_err(),
        "still airing after the cancel"
    );
    let again = app
        .post_json(&format!("/api/v1/emergency/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(again.status(), 409);
    let audit = app.json_ok("/api/v1/audit?actor=admin").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .filter(|a| a.starts_with("emergency."))
        .collect();
    assert_eq!(actions, ["emergency.start", "emergency.cancel"]);
}

#[tokio::test]
async fn bad_emergencies_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let (_rx, _cluster) = fleet(&app).await;
    let audio = app.upload_ok(&fixture(SHORT)).await;
    for (body, field) in [
        (
            json!({"audio_id": "nope", "targets": {"areas": ["tinh"]}}),
            "audio_id",
        ),
        (
            json!({"audio_id": audio["id"], "targets": {"areas": ["nowhere"]}}),
            "targets.areas[0]",
        ),
        (
            json!({"audio_id": audio["id"], "targets": {"areas": []}}),
            "targets.areas",
        ),
        (
            json!({"audio_id": audio["id"], "targets": {"areas": ["tinh"]}, "repeat": 11}),
            "repeat",
        ),
        (
            json!({"audio_id": audio["id"], "targets": {"areas": ["tinh"]}, "interval_s": 601}),
            "interval_s",
        ),
        (
            json!({"audio_id": audio["id"], "targets": {"areas": ["tinh"]}, "colour": 1}),
            "colour",
        ),
    ] {
        let (status, problem) = emergency(&app, &body).await;
        assert_eq!(status, 422, "{body}: {problem}");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{field} not in {fields:?}");
    }
    let r = app
        .client
        .post(app.url("/api/v1/emergency"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body("storm")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(
        app.json_ok("/api/v1/emergency")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn cap_alerts_air_when_actual_and_act_on_updates_cancels_duplicates_and_expiry() {
    let app = spawn_app().await;
    let (rx, _cluster) = fleet(&app).await;

    // A test alert is accepted and logged, and nothing airs.
    let (status, test) = cap(&app, &alert("T-1", "Test", "Alert", "", 6)).await;
    assert_eq!(
        (status, test["status"].as_str()),
        (202, Some("not_aired")),
        "{test}"
    );
    let mut buf = [0u8; 2048];
    assert!(rx.rtp.recv(&mut buf).is_err(), "a Test alert aired");

    // An actual alert airs on every cluster of its geocoded area, with its own audio.
    let (status, first) = cap(&app, &alert("A-1", "Actual", "Alert", "", 6)).await;
    assert_eq!(status, 202, "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    app.wait_status(&id, "playing", Duration::from_secs(5))
        .await;
    let e = app.json_ok(&format!("/api/v1/emergency/{id}")).await;
    assert_eq!(e["source"], "cap");
    assert_eq!(e["actor"], "cap:canhbao@kttv.gov.vn");
    assert_eq!(e["event"], "Bão số 9");
    assert!(rx.rtp.recv(&mut buf).is_ok());

    // The same alert again: the same id, no second emergency.
    let (status, dup) = cap(&app, &alert("A-1", "Actual", "Alert", "", 6)).await;
    assert_eq!(
        (status, dup["id"].as_str()),
        (202, Some(id.as_str())),
        "{dup}"
    );
    assert_eq!(
        app.json_ok("/api/v1/emergency")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // An update replaces it: the first is cancelled, the update airs.
    let sent = e["created_at"].as_str().unwrap().to_string();
    let refs = format!("<references>canhbao@kttv.gov.vn,A-1,{sent}</references>");
    let (status, update) = cap(&app, &alert("A-2", "Actual", "Update", &refs, 6)).await;
    assert_eq!(status, 202, "{update}");
    let second = update["id"].as_str().unwrap().to_string();
    assert_ne!(second, id);
    let first_now = app.json_ok(&format!("/api/v1/emergency/{id}")).await;
    assert_eq!(first_now["status"], "cancelled");

    // A cancel ends what it references.
    let refs = format!("<references>canhbao@kttv.gov.vn,A-2,{sent}</references>");
    let (status, cancel) = cap(&app, &alert("A-3", "Actual", "Cancel", &refs, 6)).await;
    assert_eq!(
        (status, cancel["status"].as_str()),
        (202, Some("cancelled")),
        "{cancel}"
    );
    let second_now = app.json_ok(&format!("/api/v1/emergency/{second}")).await;
    assert_eq!(second_now["status"], "cancelled");

    // Expired, malformed, and aimed at no area of ours: refused, naming the element.
    let (status, expired) = cap(&app, &alert("A-4", "Actual", "Alert", "", -1)).await;
    assert_eq!(status, 422);
    assert_eq!(
        expired["errors"][0]["field"], "alert/info/expires",
        "{expired}"
    );
    let broken = alert("A-5", "Actual", "Alert", "", 6).replace("<scope>Public</scope>", "");
    let (status, problem) = cap(&app, &broken).await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "alert/scope", "{problem}");
    let elsewhere =
        alert("A-6", "Actual", "Alert", "", 6).replace("xa-vinh-hoa</value>", "xa-khac</value>");
    let (status, problem) = cap(&app, &elsewhere).await;
    assert_eq!(status, 422, "{problem}");
    let (status, _) = cap(&app, "<alert>not CAP</alert>").await;
    assert_eq!(status, 422);

    let audit = app
        .json_ok("/api/v1/audit?actor=cap:canhbao@kttv.gov.vn")
        .await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"cap.receive"), "{actions:?}");
    assert!(actions.contains(&"emergency.start"), "{actions:?}");
    assert!(actions.contains(&"emergency.cancel"), "{actions:?}");
    assert!(actions.contains(&"cap.cancel"), "{actions:?}");
}

#[tokio::test]
async fn a_cap_update_that_cannot_air_leaves_the_alert_on_air_and_bad_audio_still_warns() {
    let app = spawn_app().await;
    let (_rx, _cluster) = fleet(&app).await;
    let long = alert("L-1", "Actual", "Alert", "", 6);
    let (status, first) = cap(&app, &long).await;
    assert_eq!(status, 202, "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    app.wait_status(&id, "playing", Duration::from_secs(5))
        .await;

    // An Update aimed at no area of ours is refused, and what it would replace airs on.
    let refs = "<references>canhbao@kttv.gov.vn,L-1,2026-11-22T15:00:00+07:00</references>";
    let nowhere =
        alert("L-2", "Actual", "Update", refs, 6).replace("xa-vinh-hoa</value>", "xa-khac</value>");
    let (status, _) = cap(&app, &nowhere).await;
    assert_eq!(status, 422);
    let e = app.json_ok(&format!("/api/v1/emergency/{id}")).await;
    assert_eq!(e["status"], "playing", "{e}");

    // Audio from a host that is not allowed: the warning airs anyway (the tone), and the
    // answer says why its audio was not used.
    let elsewhere = alert("L-3", "Actual", "Alert", "", 6).replace(
        "<mimeType>audio/mpeg</mimeType>",
        "<mimeType>audio/mpeg</mimeType><uri>http://example.org/storm.mp3</uri>",
    );
    let stripped = {
        let start = elsewhere.find("<derefUri>").unwrap();
        let end = elsewhere.find("</derefUri>").unwrap() + "</derefUri>".len();
        format!("{}{}", &elsewhere[..start], &elsewhere[end..])
    };
    let (status, body) = cap(&app, &stripped).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not in relay.allowed_hosts"),
        "{body}"
    );
    let tone_only = app
        .json_ok(&format!(
            "/api/v1/emergency/{}",
            body["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(tone_only["audio_ids"], json!([]), "{tone_only}");
}
