//! The daemon: opens the store, starts the playout engine and the HTTP server, and shuts
//! all of it down in order. The only place that wires the pieces together.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::api::{self, AppState, auth::hash_token};
use crate::codec::CodecSettings;
use crate::config::Config;
use crate::library::{AirSettings, Library};
use crate::media::DecodeLimits;
use crate::playout::{Engine, EngineEvent, Outcome, pacer};
use crate::store::{Played, Store, status};

const ADMIN_TOKEN_KEY: &str = "admin_token_sha256";

/// Runs the daemon until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.storage.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.storage.data_dir.display()
        )
    })?;
    let store = Store::open(&config.database_url()).await?;
    let stale = store
        .interrupt_unfinished("the daemon stopped while this broadcast was queued or airing")
        .await?;
    if stale > 0 {
        tracing::warn!(
            count = stale,
            "broadcasts left open by the last run marked interrupted"
        );
    }
    let admin_token_hash = admin_token(&store, &config).await?;
    let library = Arc::new(Library::open(
        &config.storage.data_dir,
        DecodeLimits {
            max_duration_s: config.audio.max_duration_s,
        },
        AirSettings {
            target_lufs: config.audio.loudness_target_lufs,
            true_peak_ceiling_dbtp: config.audio.true_peak_dbtp,
            gap_ms: config.audio.gap_ms,
            chime: config.audio.chime,
            codec: CodecSettings {
                opus_bitrate_bps: config.rtp.opus_bitrate_kbps * 1000,
            },
        },
    )?);

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let port = config.rtp.port;
    let engine = Arc::new(
        Engine::start(
            pacer::Settings {
                tick: Duration::from_millis(u64::from(config.rtp.ptime_ms)),
                rtp_bind: SocketAddr::from(([0, 0, 0, 0], port)),
                rtcp_bind: SocketAddr::from(([0, 0, 0, 0], if port == 0 { 0 } else { port + 1 })),
                cname: format!("loaxa@{}", hostname()),
                multicast_interface: config.rtp.multicast_interface,
                registration_timeout: Duration::from_secs(config.rtp.registration_timeout_s),
            },
            events_tx,
        )
        .with_context(|| {
            format!(
                "cannot bind the RTP ports {port} and {}",
                port.saturating_add(1)
            )
        })?,
    );
    let writer = tokio::spawn(record_events(store.clone(), events_rx));
    register_clusters(&store, &engine).await?;

    let state = AppState {
        store: store.clone(),
        engine: engine.clone(),
        library,
        config: config.clone(),
        admin_token_hash,
        http_metrics: Arc::default(),
        auth_limiter: Arc::new(crate::api::access::AuthLimiter::new(
            config.server.max_auth_failures_per_minute,
        )),
        monitor: Arc::new(crate::monitor::Monitor::new(&config.health)),
        relays: Arc::default(),
        calendar: Arc::new(tokio::sync::Notify::new()),
        openapi: Arc::new(OnceLock::new()),
    };
    if let Err(e) = crate::file_campaigns::sync(&state, &config.schedule.files_dir).await {
        tracing::error!(error = %e, "cannot load the schedule files");
    }
    let calendar = tokio::spawn(crate::calendar::run(state.clone()));
    let reloader = tokio::spawn(reload_on_sighup(state.clone()));
    crate::monitor::restore(&state)
        .await
        .context("cannot restore the fleet health")?;
    let monitor = tokio::spawn(crate::monitor::run(state.clone()));
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, rtp = %engine.rtp_local_addr(), "loaxa started");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    axum::serve(
        listener,
        api::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("HTTP server failed")?;

    // The calendar's every step is a committed transaction or nothing: stopping it
    // between steps loses nothing.
    calendar.abort();
    reloader.abort();
    monitor.abort();
    tracing::info!("shutting down: finishing the current packet batch");
    let stopping = engine.clone();
    tokio::task::spawn_blocking(move || stopping.shutdown()).await?;
    if tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .is_err()
    {
        tracing::error!("the as-run writer did not finish in time");
    }
    // Anything still queued (its audio was being prepared) did not air to the end.
    store
        .interrupt_unfinished("the daemon was shut down")
        .await?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The bootstrap admin token: from the config/env, or the one stored on first start, or
/// a new one, printed once.
async fn admin_token(store: &Store, config: &Config) -> anyhow::Result<[u8; 32]> {
    if let Some(token) = &config.server.admin_token {
        return Ok(hash_token(token));
    }
    if let Some(stored) = store.setting(ADMIN_TOKEN_KEY).await? {
        let bytes = hex::decode(&stored).context("stored admin token hash is corrupt")?;
        return bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("stored admin token hash has the wrong length"));
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let hash = hash_token(&token);
    store
        .set_setting(ADMIN_TOKEN_KEY, &hex::encode(hash))
        .await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "admin token (shown once, keep it safe): {token}\n\
         set LOAXA_ADMIN_TOKEN to choose your own"
    )?;
    out.flush()?;
    Ok(hash)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Reads the schedule files again on each SIGHUP.
async fn reload_on_sighup(state: AppState) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot listen for SIGHUP; schedule files load at start only");
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the schedule files");
            if let Err(e) =
                crate::file_campaigns::sync(&state, &state.config.schedule.files_dir).await
            {
                tracing::error!(error = %e, "cannot reload the schedule files");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = state;
}

/// Gives the engine the keepalive keys of every `registered` cluster, so that they
/// reach their clusters again as soon as the agents' next keepalives arrive.
async fn register_clusters(store: &Store, engine: &Engine) -> anyhow::Result<()> {
    for cluster in store.clusters().await.context("cannot list clusters")? {
        let registered = serde_json::from_str::<crate::fleet::EndpointSpec>(&cluster.endpoint)
            .is_ok_and(|spec| spec.mode == "registered");
        if let (true, Some(key)) = (registered, &cluster.agent_key)
            && let Ok(key) = hex::decode(key)
        {
            engine.registry().set_key(&cluster.id, key);
        }
    }
    Ok(())
}

/// Most engine events written in one transaction.
const EVENT_BATCH: usize = 4096;

/// Writes engine events to the store: the as-run log. Events that arrive together (a
/// broadcast starting or ending on 10,000 clusters in one tick) are written together.
async fn record_events(store: Store, mut events: mpsc::UnboundedReceiver<EngineEvent>) {
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    loop {
        let Some(first) = events.recv().await else {
            break;
        };
        batch.push(first);
        while batch.len() < EVENT_BATCH {
            match events.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let stopped = batch.iter().any(|e| matches!(e, EngineEvent::Stopped));
        let played: Vec<Played<'_>> = batch.iter().filter_map(played).collect();
        for event in &batch {
            if let EngineEvent::Preempted {
                broadcast,
                cluster,
                by,
                policy,
                at_ms,
                ..
            } = event
            {
                tracing::info!(%broadcast, %cluster, %by, policy = policy.as_str(), at_ms, "interrupted");
            }
        }
        if let Err(e) = store.record_played(&played).await {
            tracing::error!(error = %e, events = played.len(), "could not record playout events");
        }
        batch.clear();
        if stopped {
            break;
        }
    }
}

fn played(event: &EngineEvent) -> Option<Played<'_>> {
    Some(match event {
        EngineEvent::Started {
            broadcast,
            cluster,
            at,
        } => Played::Started {
            broadcast,
            cluster,
            at,
        },
        EngineEvent::Preempted {
            broadcast,
            cluster,
            by,
            policy,
            at_ms,
            at,
        } => Played::Preempted {
            broadcast,
            cluster,
            by,
            policy: policy.as_str(),
            at_ms: *at_ms,
            at,
        },
        EngineEvent::Finished {
            broadcast,
            cluster,
            outcome,
            packets_sent,
            at,
        } => Played::Finished {
            broadcast,
            cluster,
            outcome: match outcome {
                Outcome::Done => status::DONE,
                Outcome::Cancelled => status::CANCELLED,
                Outcome::Interrupted | Outcome::Dropped => status::INTERRUPTED,
            },
            packets_sent: *packets_sent,
            at,
        },
        EngineEvent::Stopped => return None,
    })
}
