//! Multicast clusters: one datagram per packet to the group, whatever the number of
//! speakers listening, and an SDP that names the group and its TTL.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use socket2::{Domain, Protocol, Socket, Type};

/// A speaker: a socket that joined `group` on the loopback interface.
fn member(group: Ipv4Addr, port: u16) -> UdpSocket {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.bind(&SocketAddrV4::new(group, port).into()).unwrap();
    socket
        .join_multicast_v4(&group, &Ipv4Addr::LOCALHOST)
        .unwrap();
    let socket = UdpSocket::from(socket);
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket
}

#[tokio::test]
async fn every_speaker_of_a_multicast_cluster_hears_the_one_stream_sent_to_the_group() {
    let app = spawn_app_with_config("[rtp]\nmulticast_interface = \"127.0.0.1\"\n").await;
    app.create_area("xa-a", None).await;
    // A group and port of this test's own, so parallel tests do not hear each other.
    let port = {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let group = Ipv4Addr::new(239, 255, (port >> 8) as u8, port as u8);
    let speakers = [
        member(group, port),
        member(group, port),
        member(group, port),
    ];

    let r = app
        .post_json(
            "/api/v1/clusters",
            &json!({"name": "Loa cả thôn", "area_code": "xa-a", "codec": "pcma",
                    "endpoint": {"mode": "multicast", "group": format!("{group}:{port}"), "ttl": 2}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let cluster: Value = r.json().await.unwrap();
    assert_eq!(cluster["endpoint"]["ttl"], 2);
    let id = cluster["id"].as_str().unwrap();
    let sdp = app
        .get(&format!("/api/v1/clusters/{id}/sdp"))
        .await
        .text()
        .await
        .unwrap();
    assert!(sdp.contains(&format!("c=IN IP4 {group}/2\r\n")), "{sdp}");
    assert!(
        sdp.contains(&format!("m=audio {port} RTP/AVP 8\r\n")),
        "{sdp}"
    );

    let audio = app.upload_ok(&fixture("announce-vi-8k.wav")).await;
    app.broadcast(audio["id"].as_str().unwrap(), &[id]).await;
    let mut buf = [0u8; 1500];
    let mut heard = Vec::new();
    for speaker in &speakers {
        let mut packets = 0;
        let mut ssrc = None;
        while let Ok(n) = speaker.recv(&mut buf) {
            // Once the stream flows, a short silence means it has ended.
            speaker
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let (h, payload) = parse_rtp(&buf[..n]);
            assert_eq!(h.payload_type, 8);
            assert_eq!(payload.len(), 160);
            assert!(ssrc.is_none() || ssrc == Some(h.ssrc));
            ssrc = Some(h.ssrc);
            packets += 1;
        }
        heard.push((packets, ssrc));
    }
    // One second of audio is 50 packets, and every speaker heard the same stream.
    assert!(heard.iter().all(|(n, _)| *n == 50), "{heard:?}");
    assert!(heard.windows(2).all(|w| w[0].1 == w[1].1));
}

#[tokio::test]
async fn a_unicast_address_is_not_a_multicast_group() {
    let app = spawn_app().await;
    app.create_area("xa-a", None).await;
    let r = app
        .post_json(
            "/api/v1/clusters",
            &json!({"name": "x", "area_code": "xa-a", "codec": "pcmu",
                    "endpoint": {"mode": "multicast", "group": "10.1.2.3:5004"}}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "endpoint.group", "{body}");
}
