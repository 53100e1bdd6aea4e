//! Clusters behind NAT (`registered`): the agent's keepalives, sent from its RTP port to
//! ours, tell the controller where to stream (symmetric RTP); a NAT rebinding moves the
//! stream without a break in the session, forged or replayed keepalives move nothing,
//! and the address expires when keepalives stop.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use loaxa::rtp::keepalive;
use serde_json::{Value, json};
use sha2::Digest;

const CLIP: &str = "announce-vi-48k-24bit-stereo.wav";

/// A cluster's agent: a UDP socket (its "NAT mapping") and the key it signs with.
struct Agent {
    cluster: String,
    key: [u8; 32],
    controller: SocketAddr,
    counter: u64,
}

impl Agent {
    fn keepalive(&mut self) -> Vec<u8> {
        self.counter += 1;
        let unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        keepalive::encode(&self.cluster, unix_ms, self.counter, &self.key)
    }

    fn send_from(&mut self, socket: &UdpSocket) -> Vec<u8> {
        let packet = self.keepalive();
        socket.send_to(&packet, self.controller).unwrap();
        packet
    }
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// RTP packets (and, separately, multiplexed RTCP) received on `socket` until `until`
/// returns true or nothing arrives for `quiet`.
fn drain(
    socket: &UdpSocket,
    quiet: Duration,
    until: impl Fn(usize) -> bool,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut rtp, mut rtcp) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 2048];
    let mut last = Instant::now();
    while last.elapsed() < quiet && !until(rtp.len()) {
        if let Ok(n) = socket.recv(&mut buf) {
            last = Instant::now();
            // RTCP packet types 200-204 sit where RTP has marker + payload type.
            if (200..=204).contains(&buf[1]) {
                rtcp.push(buf[..n].to_vec());
            } else {
                rtp.push(buf[..n].to_vec());
            }
        }
    }
    (rtp, rtcp)
}

async fn registered_cluster(app: &TestApp) -> (Agent, Value) {
    app.create_area("xa-nat", None).await;
    let r = app
        .post_json(
            "/api/v1/clusters",
            &json!({"name": "4G cluster", "area_code": "xa-nat", "codec": "pcmu",
                    "endpoint": {"mode": "registered"}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let token = created["agent_token"].as_str().expect("agent_token once");
    let port = created["keepalive_port"].as_u64().expect("keepalive_port") as u16;
    let agent = Agent {
        cluster: created["id"].as_str().unwrap().to_string(),
        key: sha2::Sha256::digest(token.as_bytes()).into(),
        controller: SocketAddr::from(([127, 0, 0, 1], port)),
        counter: 0,
    };
    (agent, created)
}

async fn wait_registered_at(app: &TestApp, cluster: &str, at: SocketAddr) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = app.json_ok(&format!("/api/v1/clusters/{cluster}")).await;
        if c["registration"]["address"] == at.to_string() {
            return c;
        }
        assert!(Instant::now() < deadline, "not registered at {at}: {c}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_registered_cluster_follows_its_nat_mapping_and_ignores_forged_keepalives() {
    let app = spawn_app().await;
    let (mut agent, created) = registered_cluster(&app).await;
    assert!(created.get("registration").is_none(), "{created}");
    // Shown once: reading the cluster again does not reveal the token.
    let again = app
        .json_ok(&format!("/api/v1/clusters/{}", agent.cluster))
        .await;
    assert!(again.get("agent_token").is_none(), "{again}");
    // With no keepalive yet there is nowhere to stream to, and no SDP to give.
    let sdp = app
        .get(&format!("/api/v1/clusters/{}/sdp", agent.cluster))
        .await;
    assert_eq!(sdp.status(), 409);

    let (first_nat, second_nat, attacker) = (socket(), socket(), socket());
    let captured = agent.send_from(&first_nat);
    wait_registered_at(&app, &agent.cluster, first_nat.local_addr().unwrap()).await;
    let sdp = app
        .get(&format!("/api/v1/clusters/{}/sdp", agent.cluster))
        .await
        .text()
        .await
        .unwrap();
    assert!(sdp.contains("a=rtcp-mux\r\n"), "{sdp}");

    let audio = app.upload_ok(&fixture(CLIP)).await;
    let expected = (audio["duration_ms"].as_u64().unwrap() as usize * 8).div_ceil(160);
    let id = app
        .broadcast(audio["id"].as_str().unwrap(), &[&agent.cluster])
        .await;
    // Half a second of audio reaches the first mapping...
    let (before, rtcp_before) = drain(&first_nat, Duration::from_secs(5), |n| n >= 25);
    assert!(
        before.len() >= 25,
        "{} packets before the rebinding",
        before.len()
    );

    // ...then an attacker replays a captured keepalive and forges one with a wrong key,
    // and the carrier NAT gives the agent a new external port.
    attacker.send_to(&captured, agent.controller).unwrap();
    let forged = keepalive::encode(&agent.cluster, 0, agent.counter + 100, &[0u8; 32]);
    attacker.send_to(&forged, agent.controller).unwrap();
    agent.send_from(&second_nat);
    wait_registered_at(&app, &agent.cluster, second_nat.local_addr().unwrap()).await;

    let (after, rtcp_after) = drain(&second_nat, Duration::from_secs(2), |n| n >= expected);
    let (late_first, _) = drain(&first_nat, Duration::from_millis(300), |_| false);
    let (stolen, _) = drain(&attacker, Duration::from_millis(300), |_| false);
    assert!(
        stolen.is_empty(),
        "the attacker got {} packets",
        stolen.len()
    );

    // One session across the move: same SSRC, sequence numbers continuous and complete.
    let mut all: Vec<_> = before
        .iter()
        .chain(&late_first)
        .chain(&after)
        .map(|p| parse_rtp(p).0)
        .collect();
    assert!(!after.is_empty(), "nothing reached the new mapping");
    assert_eq!(
        all.len(),
        expected,
        "every packet reached one mapping or the other"
    );
    let ssrc = all[0].ssrc;
    assert!(
        all.iter().all(|h| h.ssrc == ssrc),
        "one SSRC across the move"
    );
    let first_seq = all[0].sequence;
    all.sort_by_key(|h| h.sequence.wrapping_sub(first_seq));
    for (i, h) in all.iter().enumerate() {
        assert_eq!(h.sequence, first_seq.wrapping_add(i as u16), "packet {i}");
    }
    // RTCP rides on the same port (rtcp-mux): the sender report came to the mapping.
    let srs: Vec<_> = rtcp_before.iter().chain(&rtcp_after).collect();
    assert!(
        srs.iter()
            .any(|p| p[1] == 200 && p[4..8] == ssrc.to_be_bytes()),
        "no multiplexed sender report"
    );
    let b = app.wait_status(&id, "done", Duration::from_secs(5)).await;
    assert_eq!(b["status"], "done", "{b}");
}

#[tokio::test]
async fn a_registered_cluster_whose_keepalives_stop_is_not_streamed_to() {
    let app = spawn_app_with_config("[rtp]\nregistration_timeout_s = 1\n").await;
    let (mut agent, _) = registered_cluster(&app).await;
    let nat = socket();
    agent.send_from(&nat);
    wait_registered_at(&app, &agent.cluster, nat.local_addr().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c = app
        .json_ok(&format!("/api/v1/clusters/{}", agent.cluster))
        .await;
    assert!(c.get("registration").is_none(), "still registered: {c}");

    let audio = app.upload_ok(&fixture(CLIP)).await;
    let id = app
        .broadcast(audio["id"].as_str().unwrap(), &[&agent.cluster])
        .await;
    let (rtp, _) = drain(&nat, Duration::from_millis(800), |_| false);
    assert!(
        rtp.is_empty(),
        "{} packets to an expired mapping",
        rtp.len()
    );
    let b = app.wait_status(&id, "done", Duration::from_secs(5)).await;
    assert_eq!(b["status"], "done", "{b}");
    let c = app
        .json_ok(&format!("/api/v1/clusters/{}", agent.cluster))
        .await;
    assert!(
        c["send_errors"]["not_registered"].as_u64().unwrap() > 50,
        "{c}"
    );
}

#[tokio::test]
async fn a_registered_endpoint_with_an_address_is_refused_naming_the_field() {
    let app = spawn_app().await;
    app.create_area("xa-nat", None).await;
    let r = app
        .post_json(
            "/api/v1/clusters",
            &json!({"name": "x", "area_code": "xa-nat", "codec": "pcmu",
                    "endpoint": {"mode": "registered", "address": "10.0.0.1:5004"}}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(
        problem["errors"][0]["field"], "endpoint.address",
        "{problem}"
    );
}
