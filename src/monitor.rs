//! The shell around the pure health model ([`crate::fleet::health`]): feeds it the
//! agents' heartbeats, the registry's keepalives, the receiver reports and the send
//! errors; stores every transition; posts each one to the configured webhooks, retried
//! with backoff. Also holds what agents last said and the commands waiting for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use crate::api::AppState;
use crate::config::HealthConfig;
use crate::fleet::health::{ClusterHealth, Health, Signal, Status, Thresholds, Transition};
use crate::store::{NewTransition, Store};

/// How often the engine's counters (receiver reports, keepalives, send errors) are read.
const POLL: Duration = Duration::from_secs(1);
/// A test tone an agent has not confirmed within this long is dropped.
const TONE_TTL: Duration = Duration::from_secs(120);
/// Test tones waiting for one cluster's agent at most.
pub const MAX_TONES: usize = 8;

/// What an agent says in its heartbeat (unknown fields are ignored, so a newer agent can
/// talk to an older controller).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentReport {
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// The volume the agent applies now, 0-100.
    pub volume: Option<u8>,
    /// The stream it is playing, if any.
    pub playing: Option<Playing>,
    /// Audio buffered ahead of the playout point, ms.
    pub buffer_ms: Option<u32>,
    /// The jitter buffer's current target delay, ms.
    pub target_delay_ms: Option<u32>,
    #[serde(default)]
    pub packets_received: u64,
    #[serde(default)]
    pub packets_lost: u64,
    /// Arrived after their playout instant (dropped).
    #[serde(default)]
    pub packets_late: u64,
    /// Interarrival jitter measured by the agent, ms.
    pub jitter_ms: Option<f64>,
    /// `alsa`, `wav` or `null`.
    pub output: Option<String>,
    /// The agent's version.
    pub version: Option<String>,
    /// Test tones played since the last heartbeat.
    #[serde(default)]
    pub test_tones_played: Vec<String>,
    /// SRTP packets dropped because their tag did not verify (forged, injected or another
    /// key), or that were replays.
    #[serde(default)]
    pub packets_unauthenticated: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Playing {
    pub ssrc: u32,
    pub codec: String,
    /// When this stream began to play (RFC 3339).
    pub since: Option<String>,
}

/// A test tone waiting for the cluster's agent.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct ToneCommand {
    pub id: String,
    pub frequency_hz: u32,
    pub duration_ms: u32,
}

struct PendingTone {
    command: ToneCommand,
    queued: Instant,
}

/// The latest heartbeat of a cluster's agent.
#[derive(Debug, Clone)]
pub struct AgentSeen {
    pub at: DateTime<Utc>,
    pub report: AgentReport,
}

/// Shared between the API handlers and the monitor task.
pub struct Monitor {
    model: Mutex<Health>,
    agents: Mutex<HashMap<String, AgentSeen>>,
    tones: Mutex<HashMap<String, Vec<PendingTone>>>,
    /// Transitions caused by heartbeats, for the task to store and announce.
    pending: Mutex<Vec<Transition>>,
    wake: Notify,
    /// Every stored transition, for live views (`GET /api/v1/health/events`).
    events: tokio::sync::broadcast::Sender<WebhookEvent>,
}

impl Monitor {
    pub fn new(config: &HealthConfig) -> Self {
        Self {
            model: Mutex::new(Health::new(Thresholds {
                offline_after: Duration::from_secs(config.offline_after_s),
                max_loss_pct: config.max_loss_pct,
                max_jitter_ms: config.max_jitter_ms,
            })),
            agents: Mutex::default(),
            tones: Mutex::default(),
            pending: Mutex::default(),
            wake: Notify::new(),
            events: tokio::sync::broadcast::channel(1024).0,
        }
    }

    fn model(&self) -> MutexGuard<'_, Health> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new cluster: `unknown` until it is heard from.
    pub fn track(&self, cluster: &str) {
        self.model().track(cluster, Utc::now());
    }

    /// A deleted cluster.
    pub fn forget(&self, cluster: &str) {
        self.model().forget(cluster);
        lock(&self.agents).remove(cluster);
        lock(&self.tones).remove(cluster);
    }

    /// Takes a heartbeat: updates the model at once (the answer and `GET …/health` see
    /// it) and leaves the transition, if any, for the task to store and announce.
    pub fn heartbeat(&self, cluster: &str, report: AgentReport) {
        if !report.test_tones_played.is_empty()
            && let Some(tones) = lock(&self.tones).get_mut(cluster)
        {
            tones.retain(|t| !report.test_tones_played.contains(&t.command.id));
        }
        let mut model = self.model();
        // A cluster deleted while its heartbeat was on the way stays deleted.
        if model.get(cluster).is_none() {
            return;
        }
        let now = Utc::now();
        lock(&self.agents).insert(cluster.to_string(), AgentSeen { at: now, report });
        if let Some(t) = model.observe(cluster, Signal::Heartbeat, now) {
            // Queued under the model's lock, so the store sees transitions in their order.
            lock(&self.pending).push(t);
            self.wake.notify_one();
        }
    }

    /// Queues a test tone for `cluster`'s agent; it goes out in the next heartbeat answers
    /// until the agent says it played it.
    pub fn queue_tone(
        &self,
        cluster: &str,
        frequency_hz: u32,
        duration_ms: u32,
    ) -> Option<ToneCommand> {
        let command = ToneCommand {
            id: uuid::Uuid::new_v4().to_string(),
            frequency_hz,
            duration_ms,
        };
        let mut tones = lock(&self.tones);
        let list = tones.entry(cluster.to_string()).or_default();
        list.retain(|t| t.queued.elapsed() < TONE_TTL);
        if list.len() >= MAX_TONES {
            return None;
        }
        list.push(PendingTone {
            command: command.clone(),
            queued: Instant::now(),
        });
        Some(command)
    }

    /// The tones `cluster`'s agent has still to play.
    pub fn tones_for(&self, cluster: &str) -> Vec<ToneCommand> {
        let mut tones = lock(&self.tones);
        let Some(list) = tones.get_mut(cluster) else {
            return Vec::new();
        };
        list.retain(|t| t.queued.elapsed() < TONE_TTL);
        list.iter().map(|t| t.command.clone()).collect()
    }

    pub fn health(&self, cluster: &str) -> Option<ClusterHealth> {
        self.model().get(cluster).cloned()
    }

    pub fn agent(&self, cluster: &str) -> Option<AgentSeen> {
        lock(&self.agents).get(cluster).cloned()
    }

    /// Transitions as they are stored, from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<WebhookEvent> {
        self.events.subscribe()
    }

    /// Clusters by status, for `/metrics`.
    pub fn counts(&self) -> [(Status, u64); 4] {
        let model = self.model();
        Status::ALL.map(|s| {
            (
                s,
                model.iter().filter(|(_, h)| h.status == s).count() as u64,
            )
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the task last fed the model from the engine, per cluster.
#[derive(Default)]
struct Fed {
    keepalive_at: Option<DateTime<Utc>>,
    reports: u64,
    send_errors: Option<u64>,
}

/// Runs until aborted: every second (or when a heartbeat changed a status) feeds the
/// model, evaluates it at `now`, stores the transitions and hands them to the webhooks.
/// Call [`restore`] first.
pub async fn run(state: AppState) {
    let monitor = state.monitor.clone();
    let (hooks, hooks_rx) = mpsc::unbounded_channel();
    tokio::spawn(deliver_webhooks(
        state.config.health.webhooks.clone(),
        state.config.health.webhook_attempts,
        hooks_rx,
    ));
    let mut fed: HashMap<Arc<str>, Fed> = HashMap::new();
    loop {
        tokio::select! {
            () = monitor.wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
        let now = Utc::now();
        let mut transitions = std::mem::take(&mut *lock(&monitor.pending));
        {
            let mut model = monitor.model();
            feed_engine(&state, &mut model, &mut fed, now, &mut transitions);
            transitions.extend(model.evaluate(now));
        }
        if !transitions.is_empty()
            && let Err(e) = record(&state.store, &transitions, &hooks, &monitor.events).await
        {
            // Kept for the next round: a transition is announced only once it is stored.
            tracing::error!(error = %e, "cannot store health transitions; retrying");
            let mut pending = lock(&monitor.pending);
            transitions.append(&mut pending);
            *pending = transitions;
        }
    }
}

/// Tracks every cluster with the status stored before the restart (before the API
/// serves: a heartbeat for a cluster not tracked is ignored).
pub async fn restore(state: &AppState) -> anyhow::Result<()> {
    let now = Utc::now();
    let latest: HashMap<String, _> = state
        .store
        .latest_transitions()
        .await?
        .into_iter()
        .map(|t| (t.cluster_id.clone(), t))
        .collect();
    let clusters = state.store.clusters().await?;
    let mut model = state.monitor.model();
    for c in clusters {
        match latest.get(&c.id).and_then(|t| {
            let status = t.to_status.parse::<Status>().ok()?;
            let since = DateTime::parse_from_rfc3339(&t.at)
                .ok()?
                .with_timezone(&Utc);
            Some((status, since))
        }) {
            Some((status, since)) => model.restore(&c.id, status, since, now),
            None => model.track(&c.id, now),
        }
    }
    Ok(())
}

/// Feeds what the engine heard since the last call: keepalives, receiver reports and
/// send-error counters.
fn feed_engine(
    state: &AppState,
    model: &mut Health,
    fed: &mut HashMap<Arc<str>, Fed>,
    now: DateTime<Utc>,
    transitions: &mut Vec<Transition>,
) {
    let engine = &state.engine;
    let mono_now = Instant::now();
    for (cluster, age) in engine.registry().keepalive_ages(mono_now) {
        let at = now - chrono::Duration::from_std(age).unwrap_or_default();
        let f = fed.entry(cluster.clone()).or_default();
        // Within a millisecond is the same keepalive seen again.
        if f.keepalive_at
            .is_none_or(|prev| at - prev > chrono::Duration::milliseconds(1))
        {
            f.keepalive_at = Some(at);
            if model.get(&cluster).is_some() {
                transitions.extend(model.observe(&cluster, Signal::Keepalive, at.min(now)));
            }
        }
    }
    for (cluster, r) in engine.reports().all_receptions() {
        let cluster: Arc<str> = cluster.into();
        let f = fed.entry(cluster.clone()).or_default();
        if r.reports > f.reports && model.get(&cluster).is_some() {
            f.reports = r.reports;
            let at = DateTime::<Utc>::from(r.at).min(now);
            transitions.extend(model.observe(
                &cluster,
                Signal::Reception {
                    loss_pct: r.loss_pct,
                    jitter_ms: r.jitter_ms,
                },
                at,
            ));
        }
    }
    for (cluster, e) in engine.reports().all_send_errors() {
        let total = e.would_block + e.refused + e.other;
        let cluster: Arc<str> = cluster.into();
        let f = fed.entry(cluster.clone()).or_default();
        if f.send_errors != Some(total) && model.get(&cluster).is_some() {
            f.send_errors = Some(total);
            transitions.extend(model.observe(&cluster, Signal::SendErrors { total }, now));
        }
    }
    fed.retain(|cluster, _| model.get(cluster).is_some());
}

/// The JSON each webhook URL receives, once per transition.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookEvent {
    /// Always `cluster.health`.
    pub event: &'static str,
    /// The transition's sequence number in the store (increasing: order by it).
    pub seq: i64,
    pub cluster_id: String,
    pub cluster_name: Option<String>,
    pub area_code: String,
    pub from: Status,
    pub to: Status,
    pub at: String,
    pub cause: String,
}

async fn record(
    store: &Store,
    transitions: &[Transition],
    hooks: &mpsc::UnboundedSender<WebhookEvent>,
    live: &tokio::sync::broadcast::Sender<WebhookEvent>,
) -> Result<(), crate::store::StoreError> {
    let mut rows = Vec::with_capacity(transitions.len());
    for t in transitions {
        let cluster = store.cluster(&t.cluster).await.ok();
        rows.push((
            t,
            cluster.as_ref().map(|c| c.name.clone()),
            cluster.map(|c| c.area_code).unwrap_or_default(),
            t.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ));
    }
    let new: Vec<NewTransition<'_>> = rows
        .iter()
        .map(|(t, _, area, at)| NewTransition {
            cluster_id: &t.cluster,
            area_code: area,
            at,
            from_status: t.from.as_str(),
            to_status: t.to.as_str(),
            cause: &t.cause,
        })
        .collect();
    let seqs = store.insert_transitions(&new).await?;
    for ((t, name, area, at), seq) in rows.into_iter().zip(seqs) {
        tracing::info!(cluster = %t.cluster, from = %t.from, to = %t.to, cause = %t.cause, "cluster health");
        let event = WebhookEvent {
            event: "cluster.health",
            seq,
            cluster_id: t.cluster.clone(),
            cluster_name: name,
            area_code: area,
            from: t.from,
            to: t.to,
            at,
            cause: t.cause.clone(),
        };
        // No live viewer is not an error.
        let _ = live.send(event.clone());
        let _ = hooks.send(event);
    }
    Ok(())
}

/// Posts each event to every URL, each delivery on its own task so a dead receiver holds
/// up nothing; a failed delivery is retried `attempts` times in all, 1 s, 2 s, 4 s… apart
/// (at most a minute).
async fn deliver_webhooks(
    urls: Vec<String>,
    attempts: u32,
    mut events: mpsc::UnboundedReceiver<WebhookEvent>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client: no webhooks will be sent");
            return;
        }
    };
    while let Some(event) = events.recv().await {
        let Ok(body) = serde_json::to_vec(&event) else {
            continue;
        };
        for url in &urls {
            tokio::spawn(post_with_retries(
                client.clone(),
                url.clone(),
                body.clone(),
                attempts,
                event.seq,
            ));
        }
    }
}

pub(crate) async fn post_with_retries(
    client: reqwest::Client,
    url: String,
    body: Vec<u8>,
    attempts: u32,
    seq: i64,
) {
    let mut backoff = Duration::from_secs(1);
    for attempt in 1..=attempts {
        let outcome = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        match outcome {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::warn!(%url, seq, attempt, status = %r.status(), "webhook refused"),
            Err(e) => tracing::warn!(%url, seq, attempt, error = %e, "webhook failed"),
        }
        if attempt < attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
    tracing::error!(%url, seq, "webhook given up after {attempts} attempts");
}
