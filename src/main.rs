//! The `loaxa` command line: `serve` runs the daemon; `agent` is the reference speaker
//! receiver; `simulate` runs many agents for load tests; `schedules check` validates the
//! schedule files without starting anything.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use loaxa::config::Config;
use loaxa::schedules_dir::{self, DirReport};
use loaxa::store::Store;

#[derive(Parser)]
#[command(
    name = "loaxa",
    version,
    about = "Smart IP-radio broadcast controller for commune loudspeaker clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: HTTP API, store and RTP playout.
    Serve {
        /// Configuration file (default: config/loaxa.toml, all defaults if absent).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// The reference speaker agent: registers with the controller, receives the cluster's
    /// RTP stream, plays it (sound card, WAV file or nowhere) and reports its health.
    Agent {
        /// The controller's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        controller: reqwest::Url,
        /// The cluster's agent token (shown once when the cluster was created).
        #[arg(long, env = "LOAXA_AGENT_TOKEN", hide_env_values = true)]
        token: String,
        /// The cluster's id.
        #[arg(long)]
        cluster: String,
        /// `alsa`, `alsa:DEVICE`, `wav:PATH` or `null`.
        #[arg(long, default_value = "alsa")]
        output: loaxa::agent::output::OutputSpec,
        /// Local address to receive on (default: every address).
        #[arg(long)]
        bind: Option<std::net::IpAddr>,
        /// Jitter buffer bounds, milliseconds.
        #[arg(long, default_value_t = 60)]
        min_delay_ms: u64,
        #[arg(long, default_value_t = 200)]
        max_delay_ms: u64,
        /// Stop after this many seconds (default: until SIGTERM/SIGINT).
        #[arg(long)]
        seconds: Option<u64>,
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// N simulated agents on loopback in one process: creates N clusters on the
    /// controller, receives their streams (with optional loss and jitter), prints what
    /// they received and the controller's health counts, then deletes the clusters.
    Simulate {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        controller: reqwest::Url,
        /// A token that may create clusters (the admin token).
        #[arg(long, env = "LOAXA_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long, default_value_t = 10)]
        clusters: usize,
        /// Percent of received packets each agent drops.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Each packet is held back up to this many milliseconds.
        #[arg(long, default_value_t = 0)]
        jitter: u64,
        /// Area for the clusters (created if missing).
        #[arg(long, default_value = "sim")]
        area: String,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value = "pcmu")]
        codec: String,
        /// `unicast` or `registered`.
        #[arg(long, default_value = "unicast")]
        mode: String,
        /// First loopback port of unicast agents (two per agent: RTP, RTCP).
        #[arg(long, default_value_t = 40000)]
        base_port: u16,
        /// Broadcast this audio id to the area once the agents are up.
        #[arg(long)]
        play: Option<String>,
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        /// Keep the clusters afterwards.
        #[arg(long)]
        keep: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The audit log: `verify` checks its hash chain (exit 1 naming each edited, deleted
    /// or reordered row).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Users and tokens, on the host (a locked-out admin recovers here).
    Users {
        #[command(subcommand)]
        command: UsersCommand,
        /// Configuration file (default: config/loaxa.toml): the database to use.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Schedule files (`schedules/*.toml`, one campaign a file).
    Schedules {
        #[command(subcommand)]
        command: SchedulesCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recomputes the audit log's hash chain. Exit 0 when intact, 1 when any row was
    /// edited, deleted or reordered, 2 when the database cannot be read.
    Verify {
        /// Configuration file (default: config/loaxa.toml): the database to check.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Creates a user and prints its token (shown this once).
    Add {
        #[arg(long)]
        name: String,
        /// admin, operator, officer, technician or agent.
        #[arg(long)]
        role: String,
        /// The root of the user's area scope (every role but admin).
        #[arg(long)]
        area: Option<String>,
        /// Role agent: the cluster it speaks for.
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        can_approve: bool,
        /// RFC 3339 expiry.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Lists users (never their tokens).
    List,
    /// Revokes a user's token.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum SchedulesCommand {
    /// Validate every `*.toml` of DIR without starting anything: print `FILE:LINE: REASON`
    /// for each error, and each valid campaign's next airings. Exit status 0 when all are
    /// valid, 1 when any is not, 2 when the configuration or DIR cannot be used.
    Check {
        /// The schedules directory.
        #[arg(default_value = "schedules")]
        dir: PathBuf,
        /// Configuration file (default: config/loaxa.toml, all defaults if absent): the
        /// default timezone, quiet hours, audio limits and the database whose areas and
        /// clusters targets must name.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,symphonia=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The configuration as `serve` reads it: `path`, or the default file if it exists, then
/// `LOAXA_*` overrides.
fn load_config(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    let (path, must_exist) = match path {
        Some(p) => (p, true),
        None => (PathBuf::from("config/loaxa.toml"), false),
    };
    Config::load(&path, must_exist, |k| std::env::var(k).ok()).map_err(|e| {
        eprintln!("loaxa: configuration error: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, log_format } => {
            init_tracing(log_format);
            let config = match load_config(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("loaxa: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(loaxa::server::run(config, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("loaxa: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Agent {
            controller,
            token,
            cluster,
            output,
            bind,
            min_delay_ms,
            max_delay_ms,
            seconds,
            log_format,
        } => {
            init_tracing(log_format);
            if min_delay_ms == 0 || max_delay_ms < min_delay_ms || max_delay_ms > 2000 {
                eprintln!("loaxa agent: need 0 < --min-delay-ms <= --max-delay-ms <= 2000");
                return ExitCode::from(2);
            }
            let options = loaxa::agent::run::AgentOptions {
                controller,
                token,
                cluster,
                output,
                bind,
                min_delay: std::time::Duration::from_millis(min_delay_ms),
                max_delay: std::time::Duration::from_millis(max_delay_ms),
                impairment: Default::default(),
            };
            run_async(seconds, |stop| async move {
                let tally = loaxa::agent::run::run(options, stop).await?;
                tracing::info!(?tally, "agent stopped");
                Ok(())
            })
        }
        Command::Simulate {
            controller,
            token,
            clusters,
            loss,
            jitter,
            area,
            seconds,
            codec,
            mode,
            base_port,
            play,
            repeat,
            keep,
            json,
        } => {
            init_tracing(LogFormat::Human);
            if !(0.0..=100.0).contains(&loss)
                || clusters == 0
                || jitter > 2000
                || !["unicast", "registered"].contains(&mode.as_str())
            {
                eprintln!(
                    "loaxa simulate: need --clusters >= 1, 0 <= --loss <= 100, --jitter <= 2000, --mode unicast|registered"
                );
                return ExitCode::from(2);
            }
            let options = loaxa::agent::simulate::SimulateOptions {
                controller,
                token,
                clusters,
                loss: loss / 100.0,
                jitter: std::time::Duration::from_millis(jitter),
                area,
                duration: std::time::Duration::from_secs(seconds),
                codec,
                mode,
                base_port,
                play,
                repeat,
                keep,
            };
            run_async(None, |stop| async move {
                let report = loaxa::agent::simulate::run(options, stop).await?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                }
                Ok(())
            })
        }
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => match load_config(config) {
            Ok(config) => with_store(&config, |store| async move {
                match loaxa::audit_chain::verify_store(&store).await {
                    Ok(report) => {
                        for finding in &report.findings {
                            println!("{finding}");
                        }
                        println!("{}", report.summary());
                        if report.is_clean() {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::FAILURE
                        }
                    }
                    Err(e) => {
                        eprintln!("loaxa: cannot read the audit log: {e}");
                        ExitCode::from(2)
                    }
                }
            }),
            Err(code) => code,
        },
        Command::Users { command, config } => match load_config(config) {
            Ok(config) => with_store(&config, |store| users(store, command)),
            Err(code) => code,
        },
        Command::Schedules {
            command: SchedulesCommand::Check { dir, config },
        } => match load_config(config) {
            Ok(config) => check_schedules(&dir, &config, Utc::now()),
            Err(code) => code,
        },
    }
}

/// Occurrences listed for each valid campaign.
const NEXT_SHOWN: usize = 3;

/// `loaxa schedules check`: errors as `FILE:LINE: REASON` on stderr (as compilers do),
/// valid campaigns and a summary on stdout.
fn check_schedules(dir: &Path, config: &Config, now: DateTime<Utc>) -> ExitCode {
    let mut report = match schedules_dir::read_dir(dir, config, now) {
        Ok(report) => report,
        Err(e) => {
            eprintln!(
                "loaxa: cannot read the schedules directory {}: {e}",
                dir.display()
            );
            return ExitCode::from(2);
        }
    };
    if let Err(message) = check_targets(&mut report, config) {
        eprintln!("loaxa: {message}");
        return ExitCode::from(2);
    }
    for file in &report.files {
        for error in &file.errors {
            eprintln!("{}:{}: {}", file.path.display(), error.line, error.reason);
        }
        if let Some(campaign) = file.campaign() {
            println!(
                "{}: ok: {} \"{}\"",
                file.path.display(),
                campaign.id,
                campaign.file.title
            );
            let schedule = &campaign.file.schedule;
            let next: Vec<String> = schedule
                .occurrences_iter(now, DateTime::<Utc>::MAX_UTC)
                .take(NEXT_SHOWN)
                .map(|t| {
                    t.with_timezone(&schedule.timezone)
                        .format("%a %Y-%m-%d %H:%M:%S %:z")
                        .to_string()
                })
                .collect();
            if next.is_empty() {
                let why = match schedule.ends_on {
                    Some(last) => format!(", its last day was {last}"),
                    None => String::new(),
                };
                println!("    next: none, it will not air again{why}");
            } else {
                println!("    next: {}", next.join(", "));
            }
        }
    }
    let total = report.files.len();
    let invalid = report.files.iter().filter(|f| !f.errors.is_empty()).count();
    if total == 0 {
        println!("no schedule files (*.toml) in {}", dir.display());
    } else if invalid == 0 {
        println!(
            "{total} {} checked, all valid",
            plural(total, "file", "files")
        );
    } else {
        let errors = report.error_count();
        println!(
            "{total} {} checked: {} valid, {invalid} with errors ({errors} {})",
            plural(total, "file", "files"),
            total - invalid,
            plural(errors, "error", "errors")
        );
    }
    if report.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `body` on the existing store of `config` (exit 2 when there is none: these
/// commands never create a database).
fn with_store<F, Fut>(config: &Config, body: F) -> ExitCode
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let url = config.database_url();
    if let Some(path) = sqlite_file(&url)
        && !path.is_file()
    {
        eprintln!("loaxa: no database at {}", path.display());
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loaxa: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let store = match Store::open(&url).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("loaxa: {e}");
                return ExitCode::from(2);
            }
        };
        let code = body(store.clone()).await;
        store.close().await;
        code
    })
}

async fn users(store: Store, command: UsersCommand) -> ExitCode {
    let result: Result<(), String> = async {
        match command {
            UsersCommand::Add {
                name,
                role,
                area,
                cluster,
                can_approve,
                expires_at,
            } => {
                let user = loaxa::api::users::add_user(
                    &store,
                    loaxa::api::users::CreateUser {
                        name,
                        role,
                        area_code: area,
                        cluster_id: cluster,
                        can_approve: Some(can_approve),
                        expires_at,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
                let json = serde_json::to_value(&user).map_err(|e| e.to_string())?;
                store
                    .audit(loaxa::store::AuditEntry {
                        actor: "host",
                        action: "user.create",
                        target: json["id"].as_str(),
                        detail: Some("loaxa users add"),
                        result: "ok",
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?
                );
            }
            UsersCommand::List => {
                for u in store.users().await.map_err(|e| e.to_string())? {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        u.id,
                        u.role,
                        u.area_code.as_deref().unwrap_or("*"),
                        u.name,
                        if u.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                    );
                }
            }
            UsersCommand::Revoke { id } => {
                let at = loaxa::store::now_rfc3339();
                store
                    .revoke_user(&id, &at)
                    .await
                    .map_err(|e| e.to_string())?;
                store
                    .audit(loaxa::store::AuditEntry {
                        actor: "host",
                        action: "user.revoke",
                        target: Some(&id),
                        detail: Some("loaxa users revoke"),
                        result: "ok",
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                println!("revoked {id}");
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loaxa users: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Checks targets against the store when its database file already exists: a check must
/// not create one. Says once on stderr when it cannot.
fn check_targets(report: &mut DirReport, config: &Config) -> Result<(), String> {
    let url = config.database_url();
    let Some(path) = sqlite_file(&url) else {
        eprintln!("loaxa: areas not checked: {url} is not a database file");
        return Ok(());
    };
    if !path.is_file() {
        eprintln!(
            "loaxa: areas not checked: no database at {}",
            path.display()
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let store = Store::open(&url).await.map_err(|e| e.to_string())?;
        let checked = schedules_dir::check_targets(report, &store).await;
        store.close().await;
        checked.map_err(|e| format!("cannot check areas in {}: {e}", path.display()))
    })
}

/// The file of a `sqlite:` URL (`sqlite://data/loaxa.db`, `sqlite:///abs.db?mode=rwc`);
/// `None` for an in-memory database.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (file, query) = rest.split_once('?').unwrap_or((rest, ""));
    if file.is_empty() || file == ":memory:" || query.split('&').any(|p| p == "mode=memory") {
        return None;
    }
    Some(PathBuf::from(file))
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// Resolves on SIGINT or SIGTERM.
/// Runs `body` on a new runtime with a stop flag that turns true on SIGTERM/SIGINT or
/// after `seconds`.
fn run_async<F, Fut>(seconds: Option<u64>, body: F) -> ExitCode
where
    F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loaxa: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            match seconds {
                Some(s) => {
                    tokio::select! {
                        () = shutdown_signal() => {}
                        () = tokio::time::sleep(std::time::Duration::from_secs(s)) => {}
                    }
                }
                None => shutdown_signal().await,
            }
            let _ = stop_tx.send(true);
        });
        match body(stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loaxa: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("signal received");
}
