//! Configuration: `config/loaxa.toml` (every key optional), then `LOAXA_*` environment
//! overrides, validated once at start into a [`Config`] the rest of the daemon trusts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything the daemon can be told at start. Field defaults are those of API.md.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub schedule: ScheduleConfig,
    pub audio: AudioConfig,
    pub rtp: RtpConfig,
    pub health: HealthConfig,
    pub emergency: EmergencyConfig,
    pub relay: RelayConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Bootstrap admin bearer token. Never in the file in production: use LOAXA_ADMIN_TOKEN.
    pub admin_token: Option<String>,
    /// Failed authentications one client address may make per minute before it must
    /// wait out the minute (429); 0 turns the limit off.
    pub max_auth_failures_per_minute: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub database_url: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub timezone: String,
    pub quiet_hours: String,
    pub missed_run_grace_s: u64,
    pub approval_required: bool,
    /// Directory of campaign files (`*.toml`), read at start and on SIGHUP.
    pub files_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    pub loudness_target_lufs: f64,
    pub true_peak_dbtp: f64,
    pub max_upload_mb: u64,
    pub max_duration_s: u64,
    /// Silence between the items of a playlist, in ms.
    pub gap_ms: u32,
    /// An attention chime before every programme.
    pub chime: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RtpConfig {
    pub ptime_ms: u32,
    pub port: u16,
    /// Opus bitrate in kb/s (mono speech over 4G links).
    pub opus_bitrate_kbps: u32,
    /// Interface multicast streams leave by; 0.0.0.0 lets the kernel choose.
    pub multicast_interface: std::net::Ipv4Addr,
    /// A registered cluster whose keepalives stop for this long loses its address.
    pub registration_timeout_s: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// No heartbeat, keepalive or receiver report for this long: offline.
    pub offline_after_s: u64,
    /// `http://` URLs that get a POST per health transition.
    pub webhooks: Vec<String>,
    /// Receiver-reported loss above this (percent) makes a cluster degraded.
    pub max_loss_pct: f64,
    /// Receiver-reported interarrival jitter above this (ms) makes a cluster degraded.
    pub max_jitter_ms: f64,
    /// How often agents are told to send heartbeats.
    pub heartbeat_interval_s: u64,
    /// Attempts per webhook delivery (backoff 1 s, 2 s, 4 s… between them).
    pub webhook_attempts: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EmergencyConfig {
    pub attention_tone: bool,
    pub cap_geocode_value_name: String,
    /// Audio id aired after the attention tone for a CAP alert that carries no audio
    /// ("" : the tone alone).
    pub fallback_audio_id: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Hosts relays and CAP resources may be fetched from (exact host names or IPs).
    pub allowed_hosts: Vec<String>,
    /// Cushion kept between the newest relayed audio and the air, in ms: absorbs the
    /// bursts a stream arrives in. The relay's added latency is about this much.
    pub buffer_ms: u32,
    /// Relayed audio quieter than this (RMS, dBFS) counts as silence.
    pub silence_threshold_dbfs: f64,
    /// Silence this long is dead air: the relay reconnects, then falls back.
    pub silence_s: f64,
    /// No data for this long: the connection has stalled.
    pub stall_s: f64,
    /// Trouble (no stream, or dead air) lasting this long makes the relay fall back.
    pub fallback_after_s: f64,
    /// Audio id aired when a relay falls back (a relay's own `fallback_audio_id` wins);
    /// "": silence, and the relay stops.
    pub fallback_audio_id: String,
    /// Ceiling of the reconnect backoff (0.5 s, 1 s, 2 s… up to this).
    pub reconnect_max_s: f64,
    /// Connecting and receiving the response headers must take less than this.
    pub connect_timeout_s: f64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            buffer_ms: 500,
            silence_threshold_dbfs: -50.0,
            silence_s: 10.0,
            stall_s: 5.0,
            fallback_after_s: 20.0,
            fallback_audio_id: String::new(),
            reconnect_max_s: 10.0,
            connect_timeout_s: 5.0,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: None,
            max_auth_failures_per_minute: crate::api::access::MAX_AUTH_FAILURES,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            database_url: String::new(),
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            timezone: "Asia/Ho_Chi_Minh".into(),
            quiet_hours: "22:00-05:00".into(),
            missed_run_grace_s: 600,
            files_dir: PathBuf::from("schedules"),
            approval_required: true,
        }
    }
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            loudness_target_lufs: -16.0,
            true_peak_dbtp: -1.0,
            max_upload_mb: 200,
            max_duration_s: 7200,
            gap_ms: 500,
            chime: false,
        }
    }
}

impl Default for RtpConfig {
    fn default() -> Self {
        Self {
            ptime_ms: 20,
            port: 5004,
            opus_bitrate_kbps: 24,
            multicast_interface: std::net::Ipv4Addr::UNSPECIFIED,
            registration_timeout_s: 30,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            offline_after_s: 30,
            webhooks: Vec::new(),
            max_loss_pct: 5.0,
            max_jitter_ms: 50.0,
            heartbeat_interval_s: 5,
            webhook_attempts: 6,
        }
    }
}

impl Default for EmergencyConfig {
    fn default() -> Self {
        Self {
            attention_tone: true,
            cap_geocode_value_name: "loaxa".into(),
            fallback_audio_id: String::new(),
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with --config could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or of the wrong type.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// An environment override has a value that does not parse.
    #[error("environment variable {var}: {message}")]
    Env { var: &'static str, message: String },
    /// A value parses but is outside what the daemon can work with.
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Reads `path` if it exists (a missing default file means "all defaults"; a missing
    /// file named explicitly is an error), then applies `LOAXA_*` overrides from `env`.
    pub fn load(
        path: &Path,
        must_exist: bool,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Self::default(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("LOAXA_LISTEN") {
            self.server.listen = v.parse().map_err(|e| ConfigError::Env {
                var: "LOAXA_LISTEN",
                message: format!("`{v}` is not an IP:PORT address ({e})"),
            })?;
        }
        if let Some(v) = env("LOAXA_DATA_DIR") {
            self.storage.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("LOAXA_DATABASE_URL") {
            self.storage.database_url = v;
        }
        if let Some(v) = env("LOAXA_ADMIN_TOKEN") {
            self.server.admin_token = Some(v);
        }
        if let Some(v) = env("LOAXA_SCHEDULES_DIR") {
            self.schedule.files_dir = PathBuf::from(v);
        }
        if let Some(v) = env("LOAXA_QUIET_HOURS") {
            self.schedule.quiet_hours = v;
        }
        if let Some(v) = env("LOAXA_RTP_PORT") {
            self.rtp.port = v.parse().map_err(|e| ConfigError::Env {
                var: "LOAXA_RTP_PORT",
                message: format!("`{v}` is not a port ({e})"),
            })?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        if ![10, 20].contains(&self.rtp.ptime_ms) {
            return invalid(
                "rtp.ptime_ms",
                "must be 10 or 20 (clusters use multiples of it up to 60)",
            );
        }
        if let Err(e) = crate::schedule::QuietHours::parse(&self.schedule.quiet_hours) {
            return invalid("schedule.quiet_hours", &e.to_string());
        }
        if let Err(e) = crate::schedule::parse_timezone(&self.schedule.timezone) {
            return invalid("schedule.timezone", &e.to_string());
        }
        if !(1..=3600).contains(&self.rtp.registration_timeout_s) {
            return invalid(
                "rtp.registration_timeout_s",
                "must be between 1 and 3600 seconds",
            );
        }
        if !(2..=86_400).contains(&self.health.offline_after_s) {
            return invalid(
                "health.offline_after_s",
                "must be between 2 and 86400 seconds",
            );
        }
        if !(1..=3600).contains(&self.health.heartbeat_interval_s)
            || self.health.heartbeat_interval_s >= self.health.offline_after_s
        {
            return invalid(
                "health.heartbeat_interval_s",
                "must be at least 1 s and shorter than health.offline_after_s",
            );
        }
        if !(0.0..=100.0).contains(&self.health.max_loss_pct) {
            return invalid("health.max_loss_pct", "must be between 0 and 100");
        }
        if !(self.health.max_jitter_ms > 0.0 && self.health.max_jitter_ms <= 10_000.0) {
            return invalid("health.max_jitter_ms", "must be above 0 and at most 10000");
        }
        let relay = &self.relay;
        if !(60..=5000).contains(&relay.buffer_ms) {
            return invalid("relay.buffer_ms", "must be between 60 and 5000 ms");
        }
        if !(-90.0..=0.0).contains(&relay.silence_threshold_dbfs) {
            return invalid(
                "relay.silence_threshold_dbfs",
                "must be between -90 and 0 dBFS",
            );
        }
        for (key, value, max) in [
            ("relay.silence_s", relay.silence_s, 3600.0),
            ("relay.stall_s", relay.stall_s, 600.0),
            ("relay.fallback_after_s", relay.fallback_after_s, 3600.0),
            ("relay.reconnect_max_s", relay.reconnect_max_s, 600.0),
            ("relay.connect_timeout_s", relay.connect_timeout_s, 120.0),
        ] {
            if !(value >= 0.2 && value <= max) {
                return invalid(key, &format!("must be between 0.2 and {max} seconds"));
            }
        }
        if !(1..=20).contains(&self.health.webhook_attempts) {
            return invalid("health.webhook_attempts", "must be between 1 and 20");
        }
        if let Some(url) = self.health.webhooks.iter().find(|u| {
            reqwest::Url::parse(u).map_or(true, |u| u.scheme() != "http" || u.host().is_none())
        }) {
            return invalid(
                "health.webhooks",
                &format!("`{url}` is not an http:// URL (https is not built in)"),
            );
        }
        if self.audio.max_upload_mb == 0 {
            return invalid("audio.max_upload_mb", "must be at least 1");
        }
        if !(6..=128).contains(&self.rtp.opus_bitrate_kbps) {
            return invalid("rtp.opus_bitrate_kbps", "must be between 6 and 128");
        }
        if self.audio.gap_ms > 60_000 {
            return invalid("audio.gap_ms", "must be at most 60000");
        }
        if !(-40.0..=0.0).contains(&self.audio.loudness_target_lufs) {
            return invalid("audio.loudness_target_lufs", "must be between -40 and 0");
        }
        if !(-20.0..=0.0).contains(&self.audio.true_peak_dbtp) {
            return invalid("audio.true_peak_dbtp", "must be between -20 and 0");
        }
        if self.audio.max_duration_s == 0 {
            return invalid("audio.max_duration_s", "must be at least 1");
        }
        if let Some(token) = &self.server.admin_token
            && token.len() < 16
        {
            return invalid(
                "LOAXA_ADMIN_TOKEN",
                "must be at least 16 characters: it guards every broadcast",
            );
        }
        Ok(())
    }

    /// Quiet hours, if any (validated at load).
    pub fn quiet_hours(&self) -> Option<crate::schedule::QuietHours> {
        crate::schedule::QuietHours::parse(&self.schedule.quiet_hours)
            .ok()
            .flatten()
    }

    /// The default timezone of schedules (validated at load).
    pub fn timezone(&self) -> chrono_tz::Tz {
        crate::schedule::parse_timezone(&self.schedule.timezone)
            .unwrap_or(chrono_tz::Tz::Asia__Ho_Chi_Minh)
    }

    /// The SQLite URL: the configured one, or `data_dir/loaxa.db`.
    pub fn database_url(&self) -> String {
        if self.storage.database_url.is_empty() {
            format!(
                "sqlite://{}",
                self.storage.data_dir.join("loaxa.db").display()
            )
        } else {
            self.storage.database_url.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_shipped_config_file_equals_the_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/loaxa.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(Config::parse(&text, &path).unwrap(), Config::default());
    }

    #[test]
    fn environment_overrides_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        let c = Config::load(
            &path,
            true,
            env(&[
                ("LOAXA_LISTEN", "127.0.0.1:0"),
                ("LOAXA_DATA_DIR", "/tmp/x"),
                ("LOAXA_ADMIN_TOKEN", "0123456789abcdef0123"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 0);
        assert_eq!(c.storage.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.database_url(), "sqlite:///tmp/x/loaxa.db");
    }

    #[test]
    fn an_unknown_key_is_rejected_with_its_name() {
        let err =
            Config::parse("[server]\nlisten_addr = \"x\"\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn a_bad_listen_override_names_the_variable() {
        let err = Config::load(
            Path::new("/nonexistent.toml"),
            false,
            env(&[("LOAXA_LISTEN", "localhost")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("LOAXA_LISTEN"), "{err}");
    }

    #[test]
    fn a_missing_file_named_explicitly_is_an_error() {
        assert!(Config::load(Path::new("/nonexistent.toml"), true, env(&[])).is_err());
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        let err = Config::load(
            Path::new("/nonexistent.toml"),
            false,
            env(&[("LOAXA_ADMIN_TOKEN", "short")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("16"), "{err}");
    }
}
