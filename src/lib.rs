//! loaxa: a broadcast controller for commune loudspeaker clusters.
//!
//! Map of the crate, core first (pure, no I/O, no clock) then the shell:
//! - [`media`]: decode uploads (symphonia), resample (rubato), measure loudness.
//! - [`codec`]: mono clip -> RTP payload frames per codec (G.711 today).
//! - [`rtp`]: RTP sessions, RTCP sender reports and BYE, SDP.
//! - [`playout::arbiter`]: which programme each cluster airs at each tick.
//! - [`schedule`]: cron rules (POSIX meaning), occurrences, quiet hours.
//! - [`cap`]: CAP 1.2 alerts parsed and validated.
//! - [`fleet`]: areas, cluster endpoints: domain types parsed at the edge.
//! - [`config`]: the TOML file and `LOAXA_*` overrides.
//! - [`store`]: SQLite (WAL) with embedded migrations.
//! - [`library`]: uploaded files and the encode-once frame cache.
//! - [`playout`]: the engine handle and the pacer thread that sends.
//! - [`api`]: axum routes, auth, problem+json, OpenAPI.
//! - [`relay`]: live relays of remote streams, with dead-air protection.
//! - [`calendar`]: the runner that airs approved campaigns at their planned instants.
//! - [`monitor`]: feeds the health model, stores transitions, posts webhooks.
//! - [`agent`]: the reference speaker receiver (`loaxa agent`, `loaxa simulate`).
//! - [`server`]: wires it all and shuts it down in order.

pub mod agent;
pub mod api;
pub mod audit_chain;
pub mod calendar;
pub mod cap;
pub mod codec;
pub mod config;
pub mod file_campaigns;
pub mod fleet;
pub mod library;
pub mod media;
pub mod monitor;
pub mod playout;
pub mod relay;
pub mod rtp;
pub mod schedule;
pub mod schedules_dir;
pub mod server;
pub mod store;
