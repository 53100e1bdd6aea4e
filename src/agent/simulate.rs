//! `loaxa simulate`: N agents in one process on loopback, for load tests and demos. It
//! creates N clusters on the controller (through its API, with the admin token), runs an
//! agent for each (null output, optional simulated loss and jitter), optionally starts a
//! broadcast to them, and reports what they received and what the controller's health
//! model made of it. The clusters are deleted at the end unless kept.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use super::output::OutputSpec;
use super::run::{AgentOptions, Impairment, Tally};

#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub controller: reqwest::Url,
    /// A token allowed to create and delete clusters.
    pub token: String,
    pub clusters: usize,
    /// Probability 0-1 that each received datagram is dropped.
    pub loss: f64,
    pub jitter: Duration,
    /// The area the simulated clusters are created in (created if missing).
    pub area: String,
    pub duration: Duration,
    pub codec: String,
    /// `unicast` (each agent on its own loopback port pair from `base_port`) or
    /// `registered` (keepalives from an ephemeral port, as behind NAT).
    pub mode: String,
    pub base_port: u16,
    /// Audio to broadcast to the area once the agents are up.
    pub play: Option<String>,
    pub repeat: u32,
    /// Keep the clusters on the controller afterwards.
    pub keep: bool,
}

/// What the simulated fleet received, and what the controller thought of it.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub agents: usize,
    /// Agents that heard at least one stream.
    pub agents_with_audio: usize,
    pub packets_received: u64,
    pub packets_dropped_by_simulation: u64,
    pub late: u64,
    pub concealed: u64,
    pub frames_played: u64,
    pub decoded_seconds: f64,
    /// Decoded seconds per agent: min, median, max.
    pub decoded_seconds_min: f64,
    pub decoded_seconds_median: f64,
    pub decoded_seconds_max: f64,
    pub heartbeats_ok: u64,
    pub heartbeats_failed: u64,
    /// The controller's view at the end: clusters by health status.
    pub health: serde_json::Value,
    /// Degraded clusters' causes as the controller states them (at most 5).
    pub degraded_causes: Vec<String>,
    /// The broadcast started, if any.
    pub broadcast_id: Option<String>,
}

struct Api {
    client: reqwest::Client,
    base: reqwest::Url,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        let url = self.base.join(path)?;
        let mut request = self.client.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the controller at {}", self.base))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, value))
    }

    async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, value) = self.call(method.clone(), path, body).await?;
        if !status.is_success() {
            anyhow::bail!("{method} {path}: {status}: {value}");
        }
        Ok(value)
    }
}

/// Runs the simulation until `duration` has passed or `stop` turns true.
pub async fn run(
    options: SimulateOptions,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<SimReport> {
    let api = Api {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: options.controller.clone(),
        token: options.token.clone(),
    };
    let area = options.area.as_str();
    let (status, _) = api
        .call(reqwest::Method::GET, &format!("api/v1/areas/{area}"), None)
        .await?;
    if status == reqwest::StatusCode::NOT_FOUND {
        api.expect(
            reqwest::Method::POST,
            "api/v1/areas",
            Some(json!({"code": area, "name": "Simulated clusters", "kind": "simulation"})),
        )
        .await?;
    } else if !status.is_success() {
        anyhow::bail!("GET area {area}: {status}");
    }

    tracing::info!(
        clusters = options.clusters,
        "creating the simulated clusters"
    );
    let mut created: Vec<(String, String)> = Vec::with_capacity(options.clusters);
    let result = create_and_run(&api, &options, &mut created, &mut stop).await;
    if !options.keep {
        for (id, _) in &created {
            let _ = api
                .call(
                    reqwest::Method::DELETE,
                    &format!("api/v1/clusters/{id}"),
                    None,
                )
                .await;
        }
    }
    result
}

async fn create_and_run(
    api: &Api,
    options: &SimulateOptions,
    created: &mut Vec<(String, String)>,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<SimReport> {
    for i in 0..options.clusters {
        let endpoint = if options.mode == "registered" {
            json!({"mode": "registered"})
        } else {
            let port = usize::from(options.base_port) + 2 * i;
            let port =
                u16::try_from(port).context("--base-port + 2 × --clusters is above 65535")?;
            json!({"mode": "unicast", "address": format!("127.0.0.1:{port}")})
        };
        let cluster = api
            .expect(
                reqwest::Method::POST,
                "api/v1/clusters",
                Some(json!({
                    "name": format!("sim-{i:05}"),
                    "area_code": options.area,
                    "codec": options.codec,
                    "endpoint": endpoint,
                })),
            )
            .await?;
        let id = cluster["id"].as_str().context("no cluster id")?.to_string();
        let token = cluster["agent_token"]
            .as_str()
            .context("no agent token")?
            .to_string();
        created.push((id, token));
    }

    let (stop_agents, agents_stop) = watch::channel(false);
    let mut agents = tokio::task::JoinSet::new();
    for (id, token) in created.iter() {
        let agent = AgentOptions {
            controller: options.controller.clone(),
            token: token.clone(),
            cluster: id.clone(),
            output: OutputSpec::Null,
            bind: Some(std::net::Ipv4Addr::LOCALHOST.into()),
            min_delay: Duration::from_millis(60),
            max_delay: Duration::from_millis(200),
            impairment: Impairment {
                loss: options.loss,
                jitter: options.jitter,
            },
        };
        agents.spawn(super::run::run(agent, agents_stop.clone()));
    }
    tracing::info!(agents = created.len(), "agents running");

    let mut broadcast_id = None;
    if let Some(audio) = &options.play {
        // Let every agent have its first heartbeat answer and open its socket.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let b = api
            .expect(
                reqwest::Method::POST,
                "api/v1/broadcasts",
                Some(json!({
                    "audio_ids": [audio],
                    // Only the simulated clusters, never real ones in the same area.
                    "targets": {"clusters": created.iter().map(|(id, _)| id).collect::<Vec<_>>()},
                    "repeat": options.repeat.max(1),
                })),
            )
            .await?;
        broadcast_id = b["id"].as_str().map(str::to_string);
        tracing::info!(broadcast = ?broadcast_id, "broadcast started");
    }

    tokio::select! {
        () = tokio::time::sleep(options.duration) => {}
        _ = stop.changed() => {}
    }
    let health = api
        .expect(
            reqwest::Method::GET,
            &format!("api/v1/health?area={}", options.area),
            None,
        )
        .await
        .unwrap_or_default();
    let _ = stop_agents.send(true);
    let mut tallies: Vec<Tally> = Vec::with_capacity(created.len());
    while let Some(done) = agents.join_next().await {
        match done {
            Ok(Ok(t)) => tallies.push(t),
            Ok(Err(e)) => tracing::error!(error = %e, "agent failed"),
            Err(e) => tracing::error!(error = %e, "agent panicked"),
        }
    }
    let mut decoded: Vec<f64> = tallies.iter().map(|t| t.decoded_seconds).collect();
    decoded.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if decoded.is_empty() {
            0.0
        } else {
            let i = ((decoded.len() - 1) as f64 * q).round() as usize;
            (decoded[i] * 1000.0).round() / 1000.0
        }
    };
    let ours: std::collections::HashSet<&str> = created.iter().map(|(id, _)| id.as_str()).collect();
    let mine: Vec<&serde_json::Value> = health["clusters"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|c| c["cluster_id"].as_str().is_some_and(|id| ours.contains(id)))
                .collect()
        })
        .unwrap_or_default();
    let mut counts = serde_json::Map::new();
    for status in ["online", "degraded", "offline", "unknown"] {
        let n = mine.iter().filter(|c| c["status"] == status).count();
        counts.insert(status.into(), n.into());
    }
    let degraded_causes = mine
        .iter()
        .filter(|c| c["status"] == "degraded")
        .filter_map(|c| c["cause"].as_str().map(str::to_string))
        .take(5)
        .collect();
    Ok(SimReport {
        agents: created.len(),
        agents_with_audio: tallies.iter().filter(|t| t.streams > 0).count(),
        packets_received: tallies.iter().map(|t| t.packets_received).sum(),
        packets_dropped_by_simulation: tallies.iter().map(|t| t.packets_dropped).sum(),
        late: tallies.iter().map(|t| t.late).sum(),
        concealed: tallies.iter().map(|t| t.concealed).sum(),
        frames_played: tallies.iter().map(|t| t.frames_played).sum(),
        decoded_seconds: (tallies.iter().map(|t| t.decoded_seconds).sum::<f64>() * 1000.0).round()
            / 1000.0,
        decoded_seconds_min: pick(0.0),
        decoded_seconds_median: pick(0.5),
        decoded_seconds_max: pick(1.0),
        heartbeats_ok: tallies.iter().map(|t| t.heartbeats_ok).sum(),
        heartbeats_failed: tallies.iter().map(|t| t.heartbeats_failed).sum(),
        health: counts.into(),
        degraded_causes,
        broadcast_id,
    })
}
