//! A higher priority cuts in at the next tick on a real stream: one RTP session carries
//! on across the switch (same SSRC, continuous sequence and timestamps, a marker at each
//! programme start), and the interruption is recorded with its policy.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_live_broadcast_cuts_in_at_the_next_tick_and_the_scheduled_one_resumes() {
    let app = spawn_app().await;
    let rx = Receiver::bind();
    app.create_area("xa-a", None).await;
    let cluster = app.create_cluster("xa-a", "pcmu", rx.addr()).await;
    let long = app
        .upload_ok(&fixture("announce-vi-48k-24bit-stereo.wav"))
        .await; // 2 s
    let short = app.upload_ok(&fixture("announce-vi-8k.wav")).await; // 1 s
    let receiving = std::thread::spawn(move || receive_stream(&rx, Duration::from_secs(10)));

    let r = app
        .post_json(
            "/api/v1/broadcasts",
            &json!({"audio_ids": [long["id"]], "targets": {"clusters": [cluster]},
                    "priority": "scheduled", "on_interrupt": "resume"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let scheduled = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.wait_status(&scheduled, "playing", Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = app
        .post_json(
            "/api/v1/broadcasts",
            &json!({"audio_ids": [short["id"]], "targets": {"clusters": [cluster]},
                    "priority": "live"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let live = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let (rtp, _) = tokio::task::spawn_blocking(move || receiving.join().unwrap())
        .await
        .unwrap();
    // 2 s resumed in full plus 1 s of live: 100 + 50 packets, nothing lost or repeated.
    assert_eq!(rtp.len(), 150);
    let headers: Vec<_> = rtp.iter().map(|d| parse_rtp(&d.bytes).0).collect();
    let first = headers[0];
    for (i, h) in headers.iter().enumerate() {
        assert_eq!(h.ssrc, first.ssrc, "one session across the switch");
        assert_eq!(h.sequence, first.sequence.wrapping_add(i as u16));
        assert_eq!(h.timestamp, first.timestamp.wrapping_add(160 * i as u32));
    }
    let markers: Vec<usize> = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| h.marker)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(markers.len(), 3, "start, cut-in, resume: {markers:?}");
    let (cut, resume) = (markers[1], markers[2]);
    assert_eq!(resume - cut, 50, "the live programme aired whole");
    // The cut-in came on the next tick: no gap in the packet train at the switch.
    let gap = rtp[cut].at.duration_since(rtp[cut - 1].at);
    assert!(
        gap < Duration::from_millis(30),
        "gap at the switch: {gap:?}"
    );

    let s = app
        .wait_status(&scheduled, "done", Duration::from_secs(5))
        .await;
    assert_eq!(s["status"], "done", "{s}");
    assert_eq!(s["on_interrupt"], "resume");
    assert_eq!(s["clusters"][0]["packets_sent"], 100);
    let interruptions = s["clusters"][0]["interruptions"].as_array().unwrap();
    assert_eq!(interruptions.len(), 1, "{s}");
    assert_eq!(interruptions[0]["by"], live.as_str());
    assert_eq!(interruptions[0]["policy"], "resume");
    let at_ms = interruptions[0]["at_ms"].as_u64().unwrap();
    assert_eq!(at_ms, cut as u64 * 20);
    let l = app.wait_status(&live, "done", Duration::from_secs(5)).await;
    assert_eq!(l["status"], "done");
}

#[tokio::test]
async fn an_unknown_interruption_policy_is_refused_by_field() {
    let app = spawn_app().await;
    app.create_area("xa-a", None).await;
    let cluster = app
        .create_cluster("xa-a", "pcmu", "127.0.0.1:40000".parse().unwrap())
        .await;
    let audio = app.upload_ok(&fixture("announce-vi-8k.wav")).await;
    let r = app
        .post_json(
            "/api/v1/broadcasts",
            &json!({"audio_ids": [audio["id"]], "targets": {"clusters": [cluster]},
                    "on_interrupt": "pause"}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "on_interrupt", "{body}");
}
