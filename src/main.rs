//! The `loaxa` command line: `serve` runs the daemon; `schedules check` validates the
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
    /// Schedule files (`schedules/*.toml`, one campaign a file).
    Schedules {
        #[command(subcommand)]
        command: SchedulesCommand,
    },
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
