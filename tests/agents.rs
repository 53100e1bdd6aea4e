//! The reference agent and fleet health, end to end: real daemons, real `loaxa agent`
//! processes on real UDP sockets, a real webhook receiver.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Health settings short enough for tests: a heartbeat a second, offline after 3 s.
fn config(webhook: Option<SocketAddr>) -> String {
    let hooks = webhook
        .map(|a| format!("\"http://{a}/hook\""))
        .unwrap_or_default();
    format!(
        "[health]\noffline_after_s = 3\nheartbeat_interval_s = 1\nwebhook_attempts = 3\nwebhooks = [{hooks}]\n"
    )
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(app: &TestApp, cluster: &Value, output: &str) -> Agent {
    let log = std::fs::File::create(
        app.dir
            .path()
            .join(format!("agent-{}.log", cluster["id"].as_str().unwrap())),
    )
    .unwrap();
    Agent(
        Command::new(env!("CARGO_BIN_EXE_loaxa"))
            .args(["agent", "--controller", &app.base, "--cluster"])
            .arg(cluster["id"].as_str().unwrap())
            .args(["--output", output, "--bind", "127.0.0.1"])
            .env(
                "LOAXA_AGENT_TOKEN",
                cluster["agent_token"].as_str().unwrap(),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start agent"),
    )
}

async fn create(app: &TestApp, endpoint: Value) -> Value {
    let r = app
        .post_json(
            "/api/v1/clusters",
            &json!({"name": "Cụm thôn 1", "area_code": "xa", "codec": "pcmu", "endpoint": endpoint}),
        )
        .await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

/// A free loopback port pair for a unicast agent (RTP, RTCP = +1).
fn free_pair() -> SocketAddr {
    Receiver::bind().addr()
}

async fn wait_health(app: &TestApp, id: &str, want: &str, within: Duration) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let v = app.json_ok(&format!("/api/v1/clusters/{id}/health")).await;
        if v["status"] == want || start.elapsed() > within {
            return (v, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A webhook receiver that keeps every JSON body posted to it.
async fn webhook_receiver() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[tokio::test]
async fn an_agent_turns_its_cluster_online_and_killing_it_offline_with_one_webhook() {
    let (hook, posted) = webhook_receiver().await;
    let app = spawn_app_with_config(&config(Some(hook))).await;
    app.create_area("xa", None).await;
    let cluster = create(
        &app,
        json!({"mode": "unicast", "address": free_pair().to_string()}),
    )
    .await;
    let id = cluster["id"].as_str().unwrap();
    assert_eq!(
        app.json_ok(&format!("/api/v1/clusters/{id}/health")).await["status"],
        "unknown"
    );

    let mut agent = start_agent(&app, &cluster, "null");
    // Within two heartbeats (1 s apart), with a little room for the agent's start.
    let (health, took) = wait_health(&app, id, "online", Duration::from_secs(5)).await;
    assert_eq!(health["status"], "online", "{health}");
    assert!(took < Duration::from_millis(2500), "online after {took:?}");
    assert_eq!(health["agent"]["output"], "null");
    assert!(health["last_heartbeat"].is_string());

    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    let killed = Instant::now();
    let (health, _) = wait_health(&app, id, "offline", Duration::from_secs(8)).await;
    assert_eq!(health["status"], "offline", "{health}");
    let after = killed.elapsed();
    assert!(
        after >= Duration::from_secs(1) && after < Duration::from_millis(5500),
        "offline {after:?} after the kill (timeout 3 s, last heartbeat up to 1 s before)"
    );
    assert!(
        health["cause"].as_str().unwrap().contains("3 s"),
        "{health}"
    );

    // Exactly one webhook per transition: unknown→online, online→offline, and no repeat
    // while it stays offline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let posted = posted.lock().unwrap().clone();
    let mine: Vec<&Value> = posted.iter().filter(|v| v["cluster_id"] == id).collect();
    let pairs: Vec<(String, String)> = mine
        .iter()
        .map(|v| {
            (
                v["from"].as_str().unwrap().into(),
                v["to"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("unknown".into(), "online".into()),
            ("online".into(), "offline".into())
        ],
        "{posted:?}"
    );
    assert_eq!(mine[1]["event"], "cluster.health");
    assert_eq!(mine[1]["area_code"], "xa");
    assert!(mine[1]["seq"].as_i64().unwrap() > mine[0]["seq"].as_i64().unwrap());

    // The stored history says the same.
    let history = app
        .json_ok(&format!("/api/v1/clusters/{id}/health/history"))
        .await;
    let stored: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["from"].as_str().unwrap(), t["to"].as_str().unwrap()))
        .collect();
    assert_eq!(stored, [("unknown", "online"), ("online", "offline")]);
    let fleet = app.json_ok("/api/v1/health?status=offline&area=xa").await;
    assert_eq!(fleet["counts"]["offline"], 1);
    assert_eq!(fleet["clusters"].as_array().unwrap().len(), 1);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("loaxa_clusters_by_status{status=\"offline\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_registered_agent_behind_nat_writes_what_was_broadcast_to_its_wav() {
    let app = spawn_app_with_config(&config(None)).await;
    app.create_area("xa", None).await;
    let cluster = create(&app, json!({"mode": "registered"})).await;
    let id = cluster["id"].as_str().unwrap();
    let wav = app.dir.path().join("heard.wav");
    let _agent = start_agent(&app, &cluster, &format!("wav:{}", wav.display()));
    let (health, _) = wait_health(&app, id, "online", Duration::from_secs(5)).await;
    assert_eq!(health["status"], "online", "{health}");
    // Its keepalives gave the controller an address to stream to.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.json_ok(&format!("/api/v1/clusters/{id}")).await["registration"].is_null() {
        assert!(
            Instant::now() < deadline,
            "no registration from the agent's keepalives"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let fixture = fixture("announce-vi-8k.wav");
    let audio = app.upload_ok(&fixture).await;
    let b = app.broadcast(audio["id"].as_str().unwrap(), &[id]).await;
    let done = app.wait_status(&b, "done", Duration::from_secs(10)).await;
    assert_eq!(done["status"], "done");
    // The jitter buffer holds 60-200 ms; then the stream's end is noticed after 1 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    let heard = loop {
        let h = app.json_ok(&format!("/api/v1/clusters/{id}/health")).await;
        if h["agent"]["playing"].is_null() && h["agent"]["packets_received"].as_u64() > Some(0) {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never finished the stream: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(heard["agent"]["packets_lost"], 0, "{heard}");

    let (rate, channels, samples) = loaxa::agent::wav::read(&wav).expect("the agent's WAV");
    assert_eq!((rate, channels), (8000, 1));
    let duration_ms = audio["duration_ms"].as_u64().unwrap();
    // The programme is the clip plus the configured 500 ms gap after it.
    let written_ms = samples.len() as u64 * 1000 / 8000;
    assert!(
        written_ms + 100 >= duration_ms && written_ms <= duration_ms + 700,
        "wrote {written_ms} ms of a {duration_ms} ms clip"
    );
    // What the speaker played has the shape of what was uploaded (loudness normalised,
    // G.711 quantised): envelopes in 20 ms windows correlate.
    let played: Vec<f32> = samples.iter().map(|&s| f32::from(s) / 32768.0).collect();
    let reference = reference_audio(&fixture, 8000);
    let r = best_correlation(&envelope(&played, 160), &envelope(&reference, 160), 10);
    assert!(r > 0.9, "envelope correlation {r:.3}");
}

#[tokio::test]
async fn volume_and_test_tones_reach_the_agent_in_its_heartbeat_answers() {
    let app = spawn_app_with_config(&config(None)).await;
    app.create_area("xa", None).await;
    let cluster = create(
        &app,
        json!({"mode": "unicast", "address": free_pair().to_string()}),
    )
    .await;
    let id = cluster["id"].as_str().unwrap();
    let wav = app.dir.path().join("tone.wav");
    let _agent = start_agent(&app, &cluster, &format!("wav:{}", wav.display()));
    wait_health(&app, id, "online", Duration::from_secs(5)).await;

    let r = app
        .client
        .patch(app.url(&format!("/api/v1/clusters/{id}")))
        .bearer_auth(TOKEN)
        .json(&json!({"volume": 40}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .post_json(
            &format!("/api/v1/clusters/{id}/test-tone"),
            &json!({"frequency_hz": 1000, "duration_ms": 500}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let tone: Value = r.json().await.unwrap();
    let tone_id = tone["id"].as_str().unwrap();

    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let h = app.json_ok(&format!("/api/v1/clusters/{id}/health")).await;
        let played = h["agent"]["test_tones_played"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == tone_id));
        if played && h["agent"]["volume"] == 40 {
            break;
        }
        assert!(Instant::now() < deadline, "the agent did not obey: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The tone really sounded: 500 ms of 1 kHz in the WAV, at the 40 % volume's gain
    // on top of its -12 dBFS (the tone is mixed after the volume; only its level shows).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (rate, _, samples) = loaxa::agent::wav::read(&wav).expect("WAV");
    assert_eq!(rate, 8000);
    assert!(samples.len() >= 3900, "{} samples", samples.len());
    let power = |f: f64| {
        let (mut re, mut im) = (0.0, 0.0);
        for (n, &s) in samples.iter().enumerate() {
            let w = std::f64::consts::TAU * f * n as f64 / 8000.0;
            re += f64::from(s) * w.cos();
            im += f64::from(s) * w.sin();
        }
        (re * re + im * im).sqrt()
    };
    assert!(
        power(1000.0) > 20.0 * power(1500.0),
        "no 1 kHz tone in the WAV"
    );
}

#[tokio::test]
async fn heartbeats_need_the_clusters_own_token() {
    let app = spawn_app_with_config(&config(None)).await;
    app.create_area("xa", None).await;
    let a = create(&app, json!({"mode": "registered"})).await;
    let b = create(&app, json!({"mode": "registered"})).await;
    let url = app.url(&format!(
        "/api/v1/clusters/{}/heartbeat",
        a["id"].as_str().unwrap()
    ));
    let post = |token: Option<String>, body: String| {
        let mut r = app
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let ok_body = json!({"uptime_s": 1}).to_string();
    for token in [
        None,
        Some(TOKEN.to_string()),
        Some(b["agent_token"].as_str().unwrap().to_string()),
        Some("x".repeat(64)),
    ] {
        let r = post(token.clone(), ok_body.clone()).await.unwrap();
        assert_eq!(r.status(), 401, "{token:?}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let own = Some(a["agent_token"].as_str().unwrap().to_string());
    let r = post(own.clone(), ok_body.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["codec"], "pcmu");
    assert_eq!(answer["payload_type"], 0);
    assert_eq!(answer["endpoint"]["mode"], "registered");
    assert_eq!(answer["status"], "online");
    assert_eq!(answer["heartbeat_interval_s"], 1);

    let r = post(own.clone(), "{not json".into()).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post(own.clone(), json!({"uptime_s": -1}).to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = post(own, json!({"uptime_s": 1, "volume": 101}).to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // A heartbeat to a cluster that does not exist looks like a bad token: no probing ids.
    let r = app
        .client
        .post(app.url("/api/v1/clusters/nope/heartbeat"))
        .bearer_auth(a["agent_token"].as_str().unwrap())
        .json(&json!({"uptime_s": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Technician routes: unknown cluster, bad tone, bad filter.
    let r = app
        .post_json("/api/v1/clusters/nope/test-tone", &json!({}))
        .await;
    assert_eq!(r.status(), 404);
    let r = app
        .post_json(
            &format!("/api/v1/clusters/{}/test-tone", a["id"].as_str().unwrap()),
            &json!({"frequency_hz": 20}),
        )
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(app.get("/api/v1/health?status=sleepy").await.status(), 422);
    assert_eq!(app.get("/api/v1/health?area=nowhere").await.status(), 422);
    let r = app.get("/api/v1/health?colour=red").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn loss_injected_by_the_simulator_shows_in_health() {
    // Receiver reports come every 5 s: a report stays current for 12 s here.
    let app =
        spawn_app_with_config("[health]\noffline_after_s = 12\nheartbeat_interval_s = 1\n").await;
    app.create_area("xa", None).await;
    let audio = app.upload_ok(&fixture("announce-vi-8k.wav")).await;
    let out = tokio::task::spawn_blocking({
        let base = app.base.clone();
        let audio = audio["id"].as_str().unwrap().to_string();
        move || {
            Command::new(env!("CARGO_BIN_EXE_loaxa"))
                .args([
                    "simulate",
                    "--controller",
                    &base,
                    "--clusters",
                    "3",
                    "--loss",
                    "30",
                ])
                .args([
                    "--seconds",
                    "8",
                    "--area",
                    "sim",
                    "--play",
                    &audio,
                    "--repeat",
                    "5",
                ])
                .args(["--base-port", &free_pair().port().to_string(), "--json"])
                .env("LOAXA_ADMIN_TOKEN", TOKEN)
                .env("RUST_LOG", "warn")
                .output()
                .expect("run simulate")
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["agents"], 3, "{report}");
    assert_eq!(report["agents_with_audio"], 3, "{report}");
    let received = report["packets_received"].as_f64().unwrap();
    let dropped = report["packets_dropped_by_simulation"].as_f64().unwrap();
    let share = dropped / (received + dropped);
    assert!(
        (0.15..0.45).contains(&share),
        "dropped {share:.2} of packets: {report}"
    );
    assert!(report["concealed"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["health"]["degraded"], 3, "{report}");
    let causes = report["degraded_causes"].as_array().unwrap();
    assert!(
        causes.iter().all(|c| c.as_str().unwrap().contains("loss")),
        "{report}"
    );
    // Each change to degraded was stored (and would have gone to the webhooks), and
    // stays in the history after the simulated clusters are gone.
    let history = app.json_ok("/api/v1/health/transitions").await;
    let degraded = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["to"] == "degraded" && t["cause"].as_str().unwrap().contains("loss"))
        .count();
    assert_eq!(degraded, 3, "{history}");
    // The simulated clusters are gone afterwards.
    assert!(
        app.json_ok("/api/v1/clusters?area=sim")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_agent_rides_out_a_controller_crash_and_plays_again() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("health.toml");
    // Offline after 10 s: the agent's backoff (1, 2, 4 s…) finds the restarted daemon
    // well within it.
    std::fs::write(
        &config_path,
        "[health]\noffline_after_s = 10\nheartbeat_interval_s = 1\n",
    )
    .unwrap();
    let mut app = spawn_app_with(dir, &config_path, &[("LOAXA_LISTEN", &listen)]).await;
    app.create_area("xa", None).await;
    let cluster = create(
        &app,
        json!({"mode": "unicast", "address": free_pair().to_string()}),
    )
    .await;
    let id = cluster["id"].as_str().unwrap().to_string();
    let audio = app.upload_ok(&fixture("announce-vi-8k.wav")).await;
    let audio = audio["id"].as_str().unwrap().to_string();
    let _agent = start_agent(&app, &cluster, "null");
    wait_health(&app, &id, "online", Duration::from_secs(5)).await;

    // kill -9 the controller; the agent keeps retrying with backoff.
    let mut child = app.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    drop(app);
    let app = spawn_app_with(dir, &config_path, &[("LOAXA_LISTEN", &listen)]).await;

    // Back: heard from again within the backoff, and it plays what is broadcast now.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = app.json_ok(&format!("/api/v1/clusters/{id}/health")).await;
        if h["status"] == "online" && h["agent"].is_object() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not come back: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = app.broadcast(&audio, &[&id]).await;
    assert_eq!(
        app.wait_status(&b, "done", Duration::from_secs(10)).await["status"],
        "done"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let h = app.json_ok(&format!("/api/v1/clusters/{id}/health")).await;
        // The new daemon's stream: the 1 s clip in 20 ms packets.
        if h["agent"]["packets_received"].as_u64() >= Some(48) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent heard nothing after the restart: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The restart itself is no health event: the cluster never looked offline.
    let history = app
        .json_ok(&format!("/api/v1/clusters/{id}/health/history"))
        .await;
    let to: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to"].as_str().unwrap())
        .collect();
    assert_eq!(to, ["online"], "{history}");
}

#[tokio::test]
async fn the_agent_decrypts_srtp_and_drops_packets_injected_without_the_key() {
    let app = spawn_app_with_config(&config(None)).await;
    app.create_area("xa", None).await;
    let address = free_pair();
    let r = app
        .post_json(
            "/api/v1/clusters",
            &json!({"name": "Cụm SRTP", "area_code": "xa", "codec": "pcmu", "srtp": true,
                    "endpoint": {"mode": "unicast", "address": address.to_string()}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let cluster: Value = r.json().await.unwrap();
    assert_eq!(cluster["srtp"], true);
    let id = cluster["id"].as_str().unwrap();
    let wav = app.dir.path().join("srtp.wav");
    let _agent = start_agent(&app, &cluster, &format!("wav:{}", wav.display()));
    wait_health(&app, id, "online", Duration::from_secs(5)).await;

    // An attacker on the path sends plain RTP (a valid PCMU header) to the speaker.
    let attacker = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in 0..20u16 {
        let mut packet = vec![0x80, 0x00];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        packet.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
        packet.extend(std::iter::repeat_n(0x55u8, 160));
        attacker.send_to(&packet, address).unwrap();
    }
    let audio = app.upload_ok(&fixture("announce-vi-8k.wav")).await;
    let b = app.broadcast(audio["id"].as_str().unwrap(), &[id]).await;
    assert_eq!(
        app.wait_status(&b, "done", Duration::from_secs(10)).await["status"],
        "done"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let h = loop {
        let h = app.json_ok(&format!("/api/v1/clusters/{id}/health")).await;
        if h["agent"]["packets_received"].as_u64() >= Some(48)
            && h["agent"]["packets_unauthenticated"].as_u64() >= Some(20)
        {
            break h;
        }
        assert!(Instant::now() < deadline, "{h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(h["agent"]["packets_unauthenticated"], 20, "{h}");
    // What it played is the broadcast, decrypted, and nothing of the injected packets.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, _, samples) = loaxa::agent::wav::read(&wav).expect("WAV");
    let played: Vec<f32> = samples.iter().map(|&s| f32::from(s) / 32768.0).collect();
    let reference = reference_audio(&fixture("announce-vi-8k.wav"), 8000);
    let r = best_correlation(&envelope(&played, 160), &envelope(&reference, 160), 10);
    assert!(r > 0.9, "envelope correlation {r:.3}");
}

#[tokio::test]
async fn health_transitions_stream_live_to_the_dashboard() {
    let app = spawn_app_with_config(&config(None)).await;
    app.create_area("xa", None).await;
    let mut events = app
        .client
        .get(app.url("/api/v1/health/events"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let cluster = create(
        &app,
        json!({"mode": "unicast", "address": free_pair().to_string()}),
    )
    .await;
    let id = cluster["id"].as_str().unwrap();
    let _agent = start_agent(&app, &cluster, "null");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while !(seen.contains("event: transition")
        && seen.contains(id)
        && seen.contains("\"to\":\"online\""))
    {
        assert!(Instant::now() < deadline, "no transition streamed: {seen}");
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_millis(500), events.chunk()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    // The page the stream feeds is served by the daemon itself, in Vietnamese first.
    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}
