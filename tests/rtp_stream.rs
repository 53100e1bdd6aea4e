//! A broadcast as a real receiver sees it: RTP on a real UDP socket, every header field,
//! the packet spacing, RTCP on port + 1, and the audio itself decoded back from G.711.

mod common;

use std::time::Duration;

use common::*;
use loaxa::codec::Codec;
use serde_json::json;

const CLIP: &str = "announce-vi-48k-24bit-stereo.wav";

async fn stream_is_rfc3550(codec: Codec) {
    let app = spawn_app().await;
    let rx = Receiver::bind();
    app.create_area("xa-a", None).await;
    let cluster = app.create_cluster("xa-a", codec.as_str(), rx.addr()).await;
    let audio = app.upload_ok(&fixture(CLIP)).await;
    let duration_ms = audio["duration_ms"].as_u64().unwrap();

    let receiving = std::thread::spawn(move || receive_stream(&rx, Duration::from_secs(15)));
    let id = app
        .broadcast(audio["id"].as_str().unwrap(), &[&cluster])
        .await;
    let (rtp, rtcp) = tokio::task::spawn_blocking(move || receiving.join().unwrap())
        .await
        .unwrap();

    // Every packet: version 2, no padding, extension or CSRC, the codec's payload type,
    // one SSRC, sequence +1, timestamp +160, 160 bytes of payload, marker on the first only.
    let expected_packets = (duration_ms as usize * 8).div_ceil(160);
    assert_eq!(rtp.len(), expected_packets, "packets for {duration_ms} ms");
    let headers: Vec<_> = rtp.iter().map(|d| parse_rtp(&d.bytes).0).collect();
    let first = headers[0];
    for (i, h) in headers.iter().enumerate() {
        assert_eq!(h.version, 2);
        assert!(!h.padding && !h.extension && h.csrc_count == 0);
        assert_eq!(h.payload_type, codec.payload_type());
        assert_eq!(h.ssrc, first.ssrc);
        assert_eq!(h.sequence, first.sequence.wrapping_add(i as u16));
        assert_eq!(h.timestamp, first.timestamp.wrapping_add(160 * i as u32));
        assert_eq!(h.marker, i == 0, "marker on packet {i}");
        assert_eq!(parse_rtp(&rtp[i].bytes).1.len(), 160);
    }

    // Sent on absolute deadlines: the k-th packet leaves at start + k·20 ms, so arrival
    // times do not drift however long the stream (bounds are loose: CI machines are noisy;
    // the pacing benchmark gives the real figures).
    let t0 = rtp[0].at;
    let mut deviations: Vec<f64> = rtp
        .iter()
        .enumerate()
        .map(|(k, d)| (d.at.duration_since(t0).as_secs_f64() * 1000.0 - 20.0 * k as f64).abs())
        .collect();
    deviations.sort_by(f64::total_cmp);
    let median = deviations[deviations.len() / 2];
    assert!(
        median < 5.0,
        "median deviation from the 20 ms grid: {median:.2} ms"
    );
    let span = rtp.last().unwrap().at.duration_since(t0).as_secs_f64() * 1000.0;
    let ideal = 20.0 * (rtp.len() - 1) as f64;
    assert!(
        (span - ideal).abs() < 25.0,
        "stream lasted {span:.1} ms, ideal {ideal} ms"
    );

    // RTCP on port + 1: a sender report for this SSRC; no BYE, since the cluster's
    // session outlives the programme.
    let srs: Vec<_> = rtcp.iter().filter(|d| d.bytes[1] == 200).collect();
    assert!(!srs.is_empty(), "no RTCP sender report");
    let sr = &srs[0].bytes;
    assert_eq!(u32::from_be_bytes([sr[4], sr[5], sr[6], sr[7]]), first.ssrc);
    assert!(
        !rtcp.iter().any(|d| contains_rtcp_type(&d.bytes, 203)),
        "BYE at the end of a programme"
    );

    // The audio: G.711 decoded back matches the source waveform.
    let decoded: Vec<f32> = rtp
        .iter()
        .flat_map(|d| codec.decode_payload(parse_rtp(&d.bytes).1))
        .map(|s| f32::from(s) / 32768.0)
        .collect();
    let source = reference_audio(&fixture(CLIP), 8000);
    let a: Vec<f64> = source.iter().map(|&s| f64::from(s)).collect();
    let b: Vec<f64> = decoded[..source.len()]
        .iter()
        .map(|&s| f64::from(s))
        .collect();
    let r = correlation(&a, &b);
    assert!(r > 0.99, "waveform correlation {r:.4}");
    // The padding after the clip's end is silence.
    assert!(decoded[source.len()..].iter().all(|s| s.abs() < 0.001));

    let b = app.wait_status(&id, "done", Duration::from_secs(5)).await;
    assert_eq!(b["status"], "done", "{b}");
    assert_eq!(b["clusters"][0]["status"], "done");
    assert_eq!(b["clusters"][0]["packets_sent"], expected_packets);
    assert!(b["started_at"].is_string() && b["ended_at"].is_string());
}

#[tokio::test]
async fn a_pcmu_broadcast_arrives_as_rfc3550_rtp_and_decodes_back_to_the_source() {
    stream_is_rfc3550(Codec::Pcmu).await;
}

#[tokio::test]
async fn a_pcma_broadcast_arrives_as_rfc3550_rtp_and_decodes_back_to_the_source() {
    stream_is_rfc3550(Codec::Pcma).await;
}

#[tokio::test]
async fn programmes_follow_each_other_on_one_session_and_removing_the_cluster_says_bye() {
    let app = spawn_app().await;
    let rx = Receiver::bind();
    app.create_area("xa-a", None).await;
    let cluster = app.create_cluster("xa-a", "pcmu", rx.addr()).await;
    let audio = app.upload_ok(&fixture(CLIP)).await;
    let audio_id = audio["id"].as_str().unwrap();
    let per_programme = (audio["duration_ms"].as_u64().unwrap() as usize * 8).div_ceil(160);

    let rtp = rx.rtp.try_clone().unwrap();
    let receiving = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        let start = std::time::Instant::now();
        while got.len() < 2 * per_programme && start.elapsed() < Duration::from_secs(20) {
            if let Ok(n) = rtp.recv(&mut buf) {
                got.push(Datagram {
                    at: std::time::Instant::now(),
                    bytes: buf[..n].to_vec(),
                });
            }
        }
        got
    });
    for _ in 0..2 {
        let id = app.broadcast(audio_id, &[&cluster]).await;
        let b = app.wait_status(&id, "done", Duration::from_secs(10)).await;
        assert_eq!(b["status"], "done", "{b}");
        // A silence between the two programmes.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let rtp = tokio::task::spawn_blocking(move || receiving.join().unwrap())
        .await
        .unwrap();
    assert_eq!(rtp.len(), 2 * per_programme);
    let headers: Vec<_> = rtp.iter().map(|d| parse_rtp(&d.bytes).0).collect();
    let first = headers[0];
    for (i, h) in headers.iter().enumerate() {
        assert_eq!(h.ssrc, first.ssrc, "one SSRC across programmes");
        assert_eq!(
            h.sequence,
            first.sequence.wrapping_add(i as u16),
            "continuous sequence at packet {i}"
        );
        assert_eq!(
            h.marker,
            i == 0 || i == per_programme,
            "marker on packet {i}"
        );
    }
    // Across the silence the timestamp follows the media clock: it advances by the time
    // that passed between the two packets, not by one packet's worth.
    let (last, next) = (&headers[per_programme - 1], &headers[per_programme]);
    let media_ms = f64::from(next.timestamp.wrapping_sub(last.timestamp)) / 8.0;
    let wall_ms = rtp[per_programme]
        .at
        .duration_since(rtp[per_programme - 1].at)
        .as_secs_f64()
        * 1000.0;
    assert!(
        media_ms > 200.0,
        "timestamp advanced {media_ms} ms over the silence"
    );
    assert!(
        (media_ms - wall_ms).abs() < 40.0,
        "timestamp advanced {media_ms:.1} ms, the silence lasted {wall_ms:.1} ms"
    );

    // Removing the cluster ends its stream: BYE for that SSRC on port + 1.
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/clusters/{cluster}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut buf = [0u8; 2048];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let bye = loop {
        assert!(std::time::Instant::now() < deadline, "no BYE after removal");
        if let Ok(n) = rx.rtcp.recv(&mut buf)
            && contains_rtcp_type(&buf[..n], 203)
        {
            break buf[..n].to_vec();
        }
    };
    assert_eq!(
        u32::from_be_bytes([bye[4], bye[5], bye[6], bye[7]]),
        first.ssrc
    );
}

#[tokio::test]
async fn one_broadcast_reaches_every_cluster_below_an_area_with_its_own_ssrc() {
    let app = spawn_app().await;
    app.create_area("tinh", None).await;
    app.create_area("xa-1", Some("tinh")).await;
    app.create_area("thon-1", Some("xa-1")).await;
    app.create_area("xa-2", Some("tinh")).await;
    let inside = [Receiver::bind(), Receiver::bind()];
    let outside = Receiver::bind();
    app.create_cluster("xa-1", "pcmu", inside[0].addr()).await;
    app.create_cluster("thon-1", "pcma", inside[1].addr()).await;
    app.create_cluster("xa-2", "pcmu", outside.addr()).await;
    let audio = app.upload_ok(&fixture("announce-vi.ogg")).await;
    let r = app
        .post_json(
            "/api/v1/broadcasts",
            &json!({"audio_ids": [audio["id"]], "targets": {"areas": ["xa-1"]}}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = app
        .wait_status(&id, "playing", Duration::from_secs(5))
        .await;
    assert_eq!(b["clusters"].as_array().unwrap().len(), 2);
    let mut ssrcs = Vec::new();
    let mut buf = [0u8; 2048];
    for (rx, pt) in inside.iter().zip([0u8, 8]) {
        let n = rx.rtp.recv(&mut buf).expect("packet inside the area");
        let (h, _) = parse_rtp(&buf[..n]);
        assert_eq!(h.payload_type, pt);
        ssrcs.push(h.ssrc);
    }
    assert_ne!(ssrcs[0], ssrcs[1], "each cluster has its own session");
    assert!(
        outside.rtp.recv(&mut buf).is_err(),
        "a cluster outside the area got audio"
    );
    let r = app
        .post_json(&format!("/api/v1/broadcasts/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn cancelling_stops_the_stream_at_once_and_records_it() {
    let app = spawn_app().await;
    let rx = Receiver::bind();
    app.create_area("xa-a", None).await;
    let cluster = app.create_cluster("xa-a", "pcmu", rx.addr()).await;
    let audio = app.upload_ok(&fixture("announce-vi.mp3")).await;
    let receiving = std::thread::spawn(move || receive_stream(&rx, Duration::from_secs(8)));
    let id = app
        .broadcast(audio["id"].as_str().unwrap(), &[&cluster])
        .await;
    app.wait_status(&id, "playing", Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = app
        .post_json(&format!("/api/v1/broadcasts/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(r.status(), 200);
    let (rtp, rtcp) = tokio::task::spawn_blocking(move || receiving.join().unwrap())
        .await
        .unwrap();
    assert!(
        !rtcp.iter().any(|d| contains_rtcp_type(&d.bytes, 203)),
        "a cancel ends the programme, not the cluster's stream"
    );
    // 10 s of audio is 510 packets; a cancel after ~0.4 s leaves far fewer.
    assert!(rtp.len() > 5 && rtp.len() < 200, "{} packets", rtp.len());
    let b = app.json_ok(&format!("/api/v1/broadcasts/{id}")).await;
    assert_eq!(b["status"], "cancelled");
    assert_eq!(b["clusters"][0]["status"], "cancelled");
    // Cancelling twice is a conflict, not a silent success.
    let again = app
        .post_json(&format!("/api/v1/broadcasts/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(again.status(), 409);
}

#[tokio::test]
async fn sigterm_ends_streams_with_bye_exits_0_and_the_broadcast_shows_interrupted() {
    let mut app = spawn_app().await;
    let rx = Receiver::bind();
    app.create_area("xa-a", None).await;
    let cluster = app.create_cluster("xa-a", "pcma", rx.addr()).await;
    let audio = app.upload_ok(&fixture("announce-vi.flac")).await;
    let receiving = std::thread::spawn(move || receive_stream(&rx, Duration::from_secs(8)));
    let id = app
        .broadcast(audio["id"].as_str().unwrap(), &[&cluster])
        .await;
    app.wait_status(&id, "playing", Duration::from_secs(5))
        .await;

    let mut child = app.child.take().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        exit.success(),
        "exit status {exit:?}; stderr:\n{}",
        app.stderr()
    );
    let (_rtp, rtcp) = tokio::task::spawn_blocking(move || receiving.join().unwrap())
        .await
        .unwrap();
    assert!(
        contains_rtcp_type(&rtcp.last().expect("rtcp").bytes, 203),
        "no BYE on shutdown"
    );

    // Restart on the same data: the broadcast is recorded as interrupted, not vanished.
    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    drop(app);
    let app = spawn_app_in(dir).await;
    let b = app.json_ok(&format!("/api/v1/broadcasts/{id}")).await;
    assert_eq!(b["status"], "interrupted", "{b}");
    assert_eq!(b["clusters"][0]["status"], "interrupted");
    assert!(b["clusters"][0]["packets_sent"].as_u64().unwrap() > 0);
}

/// An RTCP receiver report (RFC 3550 §6.4.2) from `reporter` about `media_ssrc`.
fn receiver_report(
    media_ssrc: u32,
    fraction_lost: u8,
    cumulative_lost: u32,
    jitter: u32,
) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend(0x5EED_u32.to_be_bytes());
    p.extend(media_ssrc.to_be_bytes());
    p.push(fraction_lost);
    p.extend(&cumulative_lost.to_be_bytes()[1..]);
    p.extend(0u32.to_be_bytes());
    p.extend(jitter.to_be_bytes());
    p.extend([0u8; 8]);
    p
}

#[tokio::test]
async fn receiver_reports_sent_back_to_our_rtcp_port_show_on_the_cluster() {
    let app = spawn_app().await;
    let rx = Receiver::bind();
    app.create_area("xa-a", None).await;
    let cluster = app.create_cluster("xa-a", "pcmu", rx.addr()).await;
    let audio = app
        .upload_ok(&fixture("announce-vi-48k-24bit-stereo.wav"))
        .await;
    app.broadcast(audio["id"].as_str().unwrap(), &[&cluster])
        .await;

    // The first sender report tells the receiver our SSRC and where RTCP comes from. The
    // audio is prepared first: allow for a slow, busy machine.
    rx.rtcp
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, controller_rtcp) = rx.rtcp.recv_from(&mut buf).expect("a sender report");
    assert_eq!(buf[1], 200);
    let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    assert!(n >= 28);

    // Hostile datagrams first: dropped, and the daemon carries on.
    for junk in [
        &b"\x00\x01garbage"[..],
        &[0x81, 201, 0xFF, 0xFF, 0, 0, 0, 0],
        &[0u8; 1400],
    ] {
        rx.rtcp.send_to(junk, controller_rtcp).unwrap();
    }
    // 25% loss since the last report, 12 lost in all, jitter 160 ticks = 20 ms at 8 kHz.
    rx.rtcp
        .send_to(&receiver_report(ssrc, 64, 12, 160), controller_rtcp)
        .unwrap();

    let mut reception = serde_json::Value::Null;
    for _ in 0..40 {
        let c = app.json_ok(&format!("/api/v1/clusters/{cluster}")).await;
        if c["reception"].is_object() {
            reception = c["reception"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reception["loss_pct"], 25.0, "{reception}");
    assert_eq!(reception["cumulative_lost"], 12);
    assert_eq!(reception["jitter_ms"], 20.0);
    assert_eq!(reception["reports"], 1);
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_dead_cluster_does_not_delay_or_stop_the_others() {
    let app = spawn_app().await;
    app.create_area("xa-a", None).await;
    // A port nobody listens on: the kernel answers with ICMP port unreachable.
    let dead = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let rx = Receiver::bind();
    let dead_cluster = app.create_cluster("xa-a", "pcmu", dead).await;
    let live_cluster = app.create_cluster("xa-a", "pcmu", rx.addr()).await;
    let audio = app
        .upload_ok(&fixture("announce-vi-48k-24bit-stereo.wav"))
        .await;
    let receiving = std::thread::spawn(move || receive_stream(&rx, Duration::from_secs(10)));
    let id = app
        .broadcast(
            audio["id"].as_str().unwrap(),
            &[&dead_cluster, &live_cluster],
        )
        .await;
    let (rtp, _) = tokio::task::spawn_blocking(move || receiving.join().unwrap())
        .await
        .unwrap();
    assert_eq!(rtp.len(), 100, "the live cluster got every packet");
    let t0 = rtp[0].at;
    let worst = rtp
        .iter()
        .enumerate()
        .map(|(k, d)| (d.at.duration_since(t0).as_secs_f64() * 1000.0 - 20.0 * k as f64).abs())
        .fold(0.0, f64::max);
    assert!(worst < 20.0, "worst deviation {worst:.1} ms");
    let b = app.wait_status(&id, "done", Duration::from_secs(5)).await;
    assert_eq!(b["status"], "done", "{b}");
    let c = app
        .json_ok(&format!("/api/v1/clusters/{live_cluster}"))
        .await;
    assert_eq!(c["send_errors"]["refused"], 0);
}
