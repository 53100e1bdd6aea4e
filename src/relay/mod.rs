//! Live relays ("tiếp sóng"): a remote programme (the national or provincial radio's
//! Icecast/Shoutcast stream) aired to clusters inside a window, like any other source:
//! decoded as it arrives ([`decode`]), levelled, resampled and encoded once per codec
//! ([`pipeline`]) into live feeds the pacer reads ([`crate::playout::LiveFeed`]).
//!
//! The shell here ([`run`]) keeps the stream coming: it connects, checks that what comes
//! is audio, watches for stalls, broken connections and dead air, reconnects with backoff,
//! and after `relay.fallback_after_s` of trouble falls back (a clip, or silence and stop),
//! recording every step in the broadcast's as-run log and raising a health alert. The
//! window's end stops the relay whatever the stream does.

pub mod decode;
pub mod pipeline;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::api::AppState;
use crate::config::RelayConfig;
use crate::playout::LiveFeed;
use crate::schedule::QuietHours;
use decode::{ByteChannel, StreamError, StreamFormat, decode_stream, looks_like_text};
use pipeline::{Meter, Output, Pipeline};

/// Longest relay window: a day.
pub const MAX_DURATION_S: u32 = 86_400;
/// Sound heard this long after a fault means the stream is back.
const RECOVERED_AFTER_MS: u64 = 1000;
/// How often the watchdog looks at the stream.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// First reconnect delay; doubled on each failure up to `relay.reconnect_max_s`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// A live stream arrives in real time; this much more decoded audio than wall-clock
/// time since connecting means the URL is a file or a runaway server, not a live
/// programme (Icecast's burst on connect is a few seconds).
const MAX_AHEAD_OF_REAL_TIME_MS: u64 = 20_000;
/// How often the relay checks that its broadcast was not cancelled by other means.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// A relay as asked for, in a broadcast or a campaign.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelaySpec {
    /// `http://` URL of the stream: MP3, AAC in ADTS or Ogg Vorbis (Icecast/Shoutcast).
    /// Its host must be in `relay.allowed_hosts`.
    pub url: String,
    /// How long it airs, in seconds (1 to 86400). It stops then even if the stream goes on.
    pub duration_s: u32,
    /// Audio aired when the stream fails for longer than `relay.fallback_after_s`
    /// (default: the config's `relay.fallback_audio_id`; neither: silence, and stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_audio_id: Option<String>,
}

impl RelaySpec {
    /// Problems with the spec, by field (relative: `url`, `duration_s`).
    pub fn problems(&self, config: &RelayConfig) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Err(e) => out.push(("url", format!("`{}` is not a URL ({e})", self.url))),
            Ok(url) if url.scheme() != "http" => out.push((
                "url",
                "only http:// streams can be relayed (https is not built in)".to_string(),
            )),
            Ok(url) => {
                let host = url.host_str().unwrap_or_default();
                if !host_allowed(config, host) {
                    out.push((
                        "url",
                        format!("host `{host}` is not in relay.allowed_hosts"),
                    ));
                }
            }
        }
        if !(1..=MAX_DURATION_S).contains(&self.duration_s) {
            out.push((
                "duration_s",
                format!("must be between 1 and {MAX_DURATION_S} seconds"),
            ));
        }
        out
    }
}

/// The end of a relay window opening at `start`: `duration_s` later, or earlier where
/// quiet hours (the site's, in `tz`) begin, since only emergencies air then.
pub fn window_end(
    start: DateTime<Utc>,
    duration_s: u32,
    quiet: Option<&QuietHours>,
    tz: chrono_tz::Tz,
) -> DateTime<Utc> {
    let end = start + TimeDelta::seconds(i64::from(duration_s));
    let Some(quiet) = quiet else {
        return end;
    };
    // Quiet hours are set in minutes: the window ends at the first instant inside them,
    // looked for at the start and then at each minute boundary.
    let mut t = start;
    while t < end {
        if quiet.contains(t.with_timezone(&tz).time()) {
            return t;
        }
        let next = t + TimeDelta::minutes(1);
        t = next.duration_trunc(TimeDelta::minutes(1)).unwrap_or(next);
    }
    end
}

fn host_allowed(config: &RelayConfig, host: &str) -> bool {
    config
        .allowed_hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host))
}

/// What a relay is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    Connecting,
    Relaying,
    /// Lost the stream (or dead air): trying again.
    Reconnecting,
    /// Airing the fallback clip while trying again.
    FallenBack,
    Ended,
}

/// A relay's live status, for `GET /api/v1/broadcasts/{id}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RelayStatus {
    pub state: RelayState,
    /// Faults met so far (stalls, drops, dead air, refused content).
    pub faults: u64,
    pub last_fault: Option<String>,
    /// Audio decoded from the stream so far, in ms.
    pub decoded_ms: u64,
    /// The leveller's current gain, in dB.
    pub gain_db: f64,
    /// Times a cluster's cushion ran dry (the stream came late), over every format.
    pub underruns: u64,
    /// Frames skipped to keep latency bounded (bursts, a fast remote clock).
    pub skipped_frames: u64,
}

/// The relays running now, by broadcast, and fleet-wide counters for `/metrics`.
#[derive(Default)]
pub struct Relays {
    running: Mutex<HashMap<String, Arc<Handle>>>,
    pub faults_total: AtomicU64,
    pub fallbacks_total: AtomicU64,
}

struct Handle {
    stop: Notify,
    stopped: AtomicBool,
    status: Mutex<RelayStatus>,
    meter: Arc<Meter>,
    feeds: Vec<Arc<LiveFeed>>,
}

impl Handle {
    fn status(&self) -> std::sync::MutexGuard<'_, RelayStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Relays {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Handle>>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the relay of `broadcast`, if one runs.
    pub fn stop(&self, broadcast: &str) {
        if let Some(h) = self.lock().get(broadcast) {
            h.stopped.store(true, Ordering::Release);
            h.stop.notify_one();
        }
    }

    pub fn status(&self, broadcast: &str) -> Option<RelayStatus> {
        let h = self.lock().get(broadcast)?.clone();
        let mut status = h.status().clone();
        status.decoded_ms = h.meter.decoded_ms.load(Ordering::Relaxed);
        status.gain_db = h.meter.gain_centi_db.load(Ordering::Relaxed) as f64 / 100.0;
        for feed in &h.feeds {
            let stats = feed.stats();
            status.underruns += stats.underruns;
            status.skipped_frames += stats.skipped;
        }
        Some(status)
    }

    pub fn active(&self) -> usize {
        self.lock().len()
    }
}

/// The fallback clip, encoded for every output.
pub struct Fallback {
    pub audio_id: String,
    /// Frames for each output, in the order of the job's outputs.
    pub frames: Vec<Arc<[Bytes]>>,
}

/// One relay to run.
pub struct Job {
    pub broadcast: String,
    pub url: reqwest::Url,
    /// The end of its window (wall clock).
    pub ends_at: SystemTime,
    pub outputs: Vec<Output>,
    pub fallback: Option<Fallback>,
}

/// Frames of `ptime_ms` a feed keeps as cushion, and the most a reader may lag.
pub fn feed_for(config: &RelayConfig, ptime_ms: u32) -> Arc<LiveFeed> {
    let lead = u64::from(config.buffer_ms.div_ceil(ptime_ms.max(1)));
    // A second on top of the cushion before readers skip ahead: room for a slow remote
    // clock, not for latency to creep.
    LiveFeed::new(lead, lead + u64::from(1000 / ptime_ms.max(1)))
}

/// What follows a fault's backoff.
enum Next {
    Retry,
    /// The window is over, or the relay was stopped.
    Over,
    /// The relay stopped for good (no fallback clip); already recorded.
    Stopped,
}

/// Why one connection ended.
enum Ended {
    /// The window is over, or the relay was stopped.
    Over,
    /// It fell back with no clip to air: the relay stopped for good (recorded).
    Stopped,
    /// Something went wrong; trouble began at the instant given.
    Fault(String, Instant),
}

/// Runs the relay until its window ends or it is stopped, then closes its feeds (its
/// clusters' programmes end at once).
pub async fn run(state: AppState, job: Job) {
    let meter = Arc::new(Meter::default());
    let handle = Arc::new(Handle {
        stop: Notify::new(),
        stopped: AtomicBool::new(false),
        status: Mutex::new(RelayStatus {
            state: RelayState::Connecting,
            faults: 0,
            last_fault: None,
            decoded_ms: 0,
            gain_db: 0.0,
            underruns: 0,
            skipped_frames: 0,
        }),
        meter: meter.clone(),
        feeds: job.outputs.iter().map(|o| o.feed.clone()).collect(),
    });
    state
        .relays
        .lock()
        .insert(job.broadcast.clone(), handle.clone());
    let mut relay = Relay {
        deadline: Instant::now()
            + job
                .ends_at
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
        state: state.clone(),
        job,
        handle: handle.clone(),
        meter,
        trouble_since: None,
        fell_back: None,
        pipeline: None,
    };
    relay.run().await;
    state.relays.lock().remove(&relay.job.broadcast);
}

struct Relay {
    state: AppState,
    job: Job,
    handle: Arc<Handle>,
    meter: Arc<Meter>,
    deadline: Instant,
    /// Since when the stream has been missing or dead (None: it is fine).
    trouble_since: Option<Instant>,
    /// The fallback clip's pusher, while it airs.
    fell_back: Option<FallbackAiring>,
    pipeline: Option<Arc<Mutex<Pipeline>>>,
}

struct FallbackAiring {
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn config(&self) -> &RelayConfig {
        &self.state.config.relay
    }

    fn over(&self) -> bool {
        Instant::now() >= self.deadline || self.handle.stopped.load(Ordering::Acquire)
    }

    fn set_state(&self, to: RelayState) {
        self.handle.status().state = to;
    }

    async fn event(&self, kind: &str, detail: &str) {
        let id = &self.job.broadcast;
        if let Err(e) = self.state.store.insert_relay_event(id, kind, detail).await {
            tracing::error!(broadcast = %id, error = %e, "cannot record a relay event");
        }
    }

    async fn run(&mut self) {
        let airs = self.state.library.settings();
        match Pipeline::new(
            &self.job.outputs,
            &airs.codec,
            airs.target(),
            self.config().silence_threshold_dbfs,
            self.meter.clone(),
        ) {
            Ok(p) => self.pipeline = Some(Arc::new(Mutex::new(p))),
            Err(e) => {
                self.stop_with_failure(&format!("cannot set up the relay: {e}"))
                    .await;
                return;
            }
        }
        let mut backoff = FIRST_BACKOFF;
        let mut status_check = Instant::now() + STATUS_EVERY;
        while !self.over() {
            match self.connection(&mut status_check).await {
                Ended::Over => break,
                Ended::Stopped => return,
                Ended::Fault(why, since) => {
                    tracing::warn!(broadcast = %self.job.broadcast, url = %self.job.url, reason = %why, "relay fault");
                    self.state
                        .relays
                        .faults_total
                        .fetch_add(1, Ordering::Relaxed);
                    {
                        let mut status = self.handle.status();
                        status.faults += 1;
                        status.last_fault = Some(why.clone());
                        if status.state != RelayState::FallenBack {
                            status.state = RelayState::Reconnecting;
                        }
                    }
                    self.event("fault", &why).await;
                    let since = *self.trouble_since.get_or_insert(since);
                    match self.ride_out(since, backoff, &why).await {
                        Next::Retry => {}
                        Next::Over => break,
                        Next::Stopped => return,
                    }
                    backoff =
                        (backoff * 2).min(Duration::from_secs_f64(self.config().reconnect_max_s));
                }
            }
            if self.trouble_since.is_none() {
                backoff = FIRST_BACKOFF;
            }
        }
        self.finish().await;
    }

    /// Waits out the backoff before the next attempt, falling back when the trouble has
    /// lasted long enough.
    async fn ride_out(&mut self, since: Instant, backoff: Duration, why: &str) -> Next {
        let fallback_at = since + Duration::from_secs_f64(self.config().fallback_after_s);
        let retry_at = Instant::now() + backoff;
        loop {
            if self.over() {
                return Next::Over;
            }
            if self.fell_back.is_none()
                && Instant::now() >= fallback_at
                && !self.fall_back(why).await
            {
                return Next::Stopped;
            }
            let mut wake = retry_at.min(self.deadline);
            if self.fell_back.is_none() {
                wake = wake.min(fallback_at);
            }
            if Instant::now() >= retry_at {
                return Next::Retry;
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = self.handle.stop.notified() => {}
            }
        }
    }

    /// Falls back after lasting trouble: the fallback clip airs while the relay keeps
    /// trying, or, without one, the relay stops. False when it stopped.
    async fn fall_back(&mut self, why: &str) -> bool {
        self.state
            .relays
            .fallbacks_total
            .fetch_add(1, Ordering::Relaxed);
        let Some(fallback) = &self.job.fallback else {
            let detail = format!(
                "relay lost for {:.0} s ({why}); no fallback clip: stopped",
                self.config().fallback_after_s
            );
            self.alert("stopped", why).await;
            self.stop_with_failure(&detail).await;
            return false;
        };
        let detail = format!("fell back to audio {} ({why})", fallback.audio_id);
        tracing::error!(broadcast = %self.job.broadcast, reason = %why, "relay falls back");
        self.event("fallback", &detail).await;
        self.set_detail(&detail).await;
        self.alert("fallback", why).await;
        self.set_state(RelayState::FallenBack);
        self.meter.muted.store(true, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let lead = Duration::from_millis(u64::from(self.config().buffer_ms));
        let clips: Vec<(Arc<LiveFeed>, Arc<[Bytes]>, u32)> = self
            .job
            .outputs
            .iter()
            .zip(&fallback.frames)
            .map(|(o, f)| (o.feed.clone(), f.clone(), o.ptime_ms))
            .collect();
        tokio::spawn(push_clip(clips, lead, stop.clone()));
        self.fell_back = Some(FallbackAiring { stop });
        true
    }

    /// The stream is back: the fallback clip (if on) gives way to it.
    async fn recovered(&mut self) {
        if let Some(fb) = self.fell_back.take() {
            fb.stop.store(true, Ordering::Relaxed);
            self.meter.muted.store(false, Ordering::Relaxed);
        }
        if let Some(since) = self.trouble_since.take() {
            let detail = format!(
                "the stream is back after {:.1} s",
                since.elapsed().as_secs_f64()
            );
            tracing::info!(broadcast = %self.job.broadcast, "relay recovered");
            self.event("recovered", &detail).await;
        }
        self.set_state(RelayState::Relaying);
    }

    /// One connection, from request to its end.
    async fn connection(&mut self, status_check: &mut Instant) -> Ended {
        let started = Instant::now();
        let config = self.config().clone();
        let allowed = config.clone();
        let client = match reqwest::Client::builder()
            .connect_timeout(Duration::from_secs_f64(config.connect_timeout_s))
            // A redirect must stay on an allowed host.
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                let ok = attempt.previous().len() < 3
                    && attempt.url().scheme() == "http"
                    && host_allowed(&allowed, attempt.url().host_str().unwrap_or_default());
                if ok { attempt.follow() } else { attempt.stop() }
            }))
            .build()
        {
            Ok(c) => c,
            Err(e) => return Ended::Fault(format!("cannot build the HTTP client: {e}"), started),
        };
        let request = client
            .get(self.job.url.clone())
            .header(reqwest::header::USER_AGENT, "loaxa-relay");
        let response = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs_f64(config.connect_timeout_s), request.send()) => r,
            () = tokio::time::sleep_until(self.deadline) => return Ended::Over,
            () = self.handle.stop.notified() => return Ended::Over,
        };
        let mut response = match response {
            Err(_) => {
                return Ended::Fault(
                    format!("no answer within {} s", config.connect_timeout_s),
                    started,
                );
            }
            Ok(Err(e)) => {
                return Ended::Fault(format!("cannot connect: {}", error_chain(&e)), started);
            }
            Ok(Ok(r)) => r,
        };
        if !response.status().is_success() {
            return Ended::Fault(
                format!("the server answered {}", response.status()),
                started,
            );
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let Some(format) = StreamFormat::from_content_type(&content_type) else {
            return Ended::Fault(
                format!("not an audio stream (Content-Type `{content_type}`)"),
                started,
            );
        };

        let Some(pipeline) = self.pipeline.clone() else {
            return Ended::Over;
        };
        let (tx, source) = ByteChannel::new();
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        let stop_decoder = Arc::new(AtomicBool::new(false));
        let stop_flag = stop_decoder.clone();
        let spawned = std::thread::Builder::new()
            .name("loaxa-relay".into())
            .spawn(move || {
                let mut pipeline = pipeline.lock().unwrap_or_else(PoisonError::into_inner);
                pipeline.reset_stream();
                let mut failure = None;
                let why = decode_stream(source, format, &mut |mono, rate| {
                    if stop_flag.load(Ordering::Relaxed) {
                        return false;
                    }
                    match pipeline.push(mono, rate) {
                        Ok(()) => true,
                        Err(e) => {
                            failure = Some(e);
                            false
                        }
                    }
                });
                let _ = done_tx.send(match failure {
                    Some(e) => StreamError::DecoderFailed(e),
                    None => why,
                });
            });
        if let Err(e) = spawned {
            return Ended::Fault(format!("cannot start the decoder: {e}"), started);
        }
        // Whatever ends this connection, the decoder thread ends with it.
        let _guard = StopOnDrop(stop_decoder);

        let decoded_at_start = self.meter.decoded_ms.load(Ordering::Relaxed);
        let mut first = true;
        let mut last_data = Instant::now();
        let mut connected = false;
        let stall = Duration::from_secs_f64(config.stall_s);
        let mut watch = tokio::time::interval(WATCH_EVERY);
        loop {
            tokio::select! {
                chunk = response.chunk() => match chunk {
                    Ok(Some(chunk)) => {
                        if first {
                            first = false;
                            if looks_like_text(&chunk) {
                                return Ended::Fault(
                                    "not an audio stream (the body is a text or HTML page)".into(),
                                    started,
                                );
                            }
                        }
                        last_data = Instant::now();
                        if tx.send(chunk).is_err() {
                            // The decoder stopped; its reason follows on `done_rx`.
                            continue;
                        }
                    }
                    Ok(None) => return Ended::Fault("the server closed the stream".into(), last_data),
                    Err(e) => return Ended::Fault(format!("the connection broke: {}", error_chain(&e)), last_data),
                },
                _ = watch.tick() => {}
                () = tokio::time::sleep_until(self.deadline) => return Ended::Over,
                () = self.handle.stop.notified() => return Ended::Over,
            }
            if self.over() {
                return Ended::Over;
            }
            if let Ok(why) = done_rx.try_recv() {
                return Ended::Fault(why.to_string(), last_data);
            }
            let now = Instant::now();
            if now - last_data >= stall {
                return Ended::Fault(
                    format!(
                        "stalled: no data for {:.1} s",
                        (now - last_data).as_secs_f64()
                    ),
                    last_data,
                );
            }
            let silent = self.meter.silent_ms.load(Ordering::Relaxed);
            if silent as f64 >= config.silence_s * 1000.0 {
                return Ended::Fault(
                    format!(
                        "dead air: {:.1} s below {} dBFS",
                        silent as f64 / 1000.0,
                        config.silence_threshold_dbfs
                    ),
                    now - Duration::from_millis(silent),
                );
            }
            let decoded = self.meter.decoded_ms.load(Ordering::Relaxed) - decoded_at_start;
            if decoded > started.elapsed().as_millis() as u64 + MAX_AHEAD_OF_REAL_TIME_MS {
                return Ended::Fault(
                    "the stream arrives faster than real time: not a live programme".into(),
                    started,
                );
            }
            // Connected but still silent since the trouble began: the fallback is due
            // now, not at the next fault.
            if let Some(since) = self.trouble_since
                && self.fell_back.is_none()
                && self.meter.heard_ms.load(Ordering::Relaxed) == 0
                && now >= since + Duration::from_secs_f64(config.fallback_after_s)
            {
                let why = self
                    .handle
                    .status()
                    .last_fault
                    .clone()
                    .unwrap_or_else(|| "no audio".into());
                if !self.fall_back(&why).await {
                    return Ended::Stopped;
                }
            }
            if !connected && decoded > 0 {
                connected = true;
                self.event("connected", &format!("{} ({content_type})", self.job.url))
                    .await;
                if self.trouble_since.is_none() {
                    self.set_state(RelayState::Relaying);
                }
            }
            if self.meter.heard_ms.load(Ordering::Relaxed) >= RECOVERED_AFTER_MS
                && (self.trouble_since.is_some() || self.fell_back.is_some())
            {
                self.recovered().await;
            }
            if now >= *status_check {
                *status_check = now + STATUS_EVERY;
                if let Ok(b) = self.state.store.broadcast(&self.job.broadcast).await
                    && crate::store::status::is_final(&b.status)
                {
                    return Ended::Over;
                }
            }
        }
    }

    async fn set_detail(&self, detail: &str) {
        if let Err(e) = self
            .state
            .store
            .set_broadcast_detail(&self.job.broadcast, detail)
            .await
        {
            tracing::error!(broadcast = %self.job.broadcast, error = %e, "cannot record relay detail");
        }
    }

    /// Posts a relay alert to every health webhook.
    async fn alert(&self, action: &str, why: &str) {
        let body = serde_json::json!({
            "event": "relay.fallback",
            "broadcast_id": self.job.broadcast,
            "url": self.job.url.as_str(),
            "action": action,
            "reason": why,
            "at": crate::store::now_rfc3339(),
        });
        let Ok(body) = serde_json::to_vec(&body) else {
            return;
        };
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(_) => return,
        };
        for url in &self.state.config.health.webhooks {
            tokio::spawn(crate::monitor::post_with_retries(
                client.clone(),
                url.clone(),
                body.clone(),
                self.state.config.health.webhook_attempts,
                0,
            ));
        }
    }

    /// Ends the relay as failed: its clusters stop at once.
    async fn stop_with_failure(&mut self, detail: &str) {
        self.event("stopped", detail).await;
        crate::api::airing::fail(&self.state, &self.job.broadcast, detail).await;
        self.close_feeds();
        self.set_state(RelayState::Ended);
    }

    fn close_feeds(&self) {
        for out in &self.job.outputs {
            out.feed.close();
        }
    }

    async fn finish(&mut self) {
        let fell_back = self
            .fell_back
            .take()
            .map(|fb| fb.stop.store(true, Ordering::Relaxed));
        let stopped = self.handle.stopped.load(Ordering::Acquire);
        let why = if stopped {
            "stopped"
        } else {
            "the window ended"
        };
        self.event("ended", why).await;
        if !stopped && fell_back.is_none() && self.meter.decoded_ms.load(Ordering::Relaxed) == 0 {
            // Nothing came in the whole window: the airing did not happen.
            let last = self
                .handle
                .status()
                .last_fault
                .clone()
                .unwrap_or_else(|| "no answer".into());
            let detail = format!("the relay window ended without audio from the stream ({last})");
            crate::api::airing::fail(&self.state, &self.job.broadcast, &detail).await;
        }
        self.close_feeds();
        self.set_state(RelayState::Ended);
        tracing::info!(broadcast = %self.job.broadcast, reason = why, "relay ended");
    }
}

/// Sets the flag when dropped: tells the decoder thread of a connection to stop.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Pushes a clip's frames into the feeds at the pace they air (a cushion ahead), so the
/// readers never see a backlog to skip, until the clip ends or `stop` is set.
async fn push_clip(
    clips: Vec<(Arc<LiveFeed>, Arc<[Bytes]>, u32)>,
    lead: Duration,
    stop: Arc<AtomicBool>,
) {
    let start = Instant::now();
    let mut sent = vec![0usize; clips.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let elapsed = start.elapsed() + lead;
        let mut all_done = true;
        for ((feed, frames, ptime), sent) in clips.iter().zip(&mut sent) {
            let due =
                ((elapsed.as_millis() / u128::from((*ptime).max(1))) as usize).min(frames.len());
            if due > *sent {
                feed.extend(frames[*sent..due].iter().cloned());
                *sent = due;
            }
            all_done &= *sent >= frames.len();
        }
        if all_done {
            return;
        }
    }
}

/// An error with its causes, which is where reqwest says what actually went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_window_ends_after_its_duration_or_where_quiet_hours_begin() {
        let tz = chrono_tz::Asia::Ho_Chi_Minh;
        let quiet = QuietHours::parse("22:00-05:00").unwrap();
        // 21:30 in Hanoi for an hour: cut at 22:00.
        let start = at("2026-12-01T21:30:15+07:00");
        assert_eq!(
            window_end(start, 3600, quiet.as_ref(), tz),
            at("2026-12-01T22:00:00+07:00")
        );
        // 05:30 for half an hour: clear of them.
        let start = at("2026-12-02T05:30:00+07:00");
        assert_eq!(
            window_end(start, 1800, quiet.as_ref(), tz),
            at("2026-12-02T06:00:00+07:00")
        );
        // Starting inside them: over at once.
        let start = at("2026-12-02T04:59:30+07:00");
        assert_eq!(window_end(start, 600, quiet.as_ref(), tz), start);
        // No quiet hours: the full window.
        assert_eq!(
            window_end(start, 600, None, tz),
            at("2026-12-02T05:09:30+07:00")
        );
        // A relay window is bounded (a day at most), so the walk is too.
        let relay = RelaySpec {
            url: "http://radio.example/vov1.mp3".into(),
            duration_s: MAX_DURATION_S + 1,
            fallback_audio_id: None,
        };
        let config = RelayConfig {
            allowed_hosts: vec!["radio.example".into()],
            ..RelayConfig::default()
        };
        assert_eq!(relay.problems(&config)[0].0, "duration_s");
    }
}
