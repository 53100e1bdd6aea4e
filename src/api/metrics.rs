//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of what the daemon does:
//! packets and bytes sent, the pacer's wake-up lateness, send errors and reception per
//! cluster, clusters by endpoint mode, broadcasts on air by priority, HTTP requests and
//! their latencies. Also the middleware that counts HTTP requests.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::problem::ApiError;
use crate::playout::reports::LATENESS_BUCKETS_US;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Upper bounds (s) of the HTTP latency histogram.
const HTTP_BUCKETS_S: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default, Clone)]
struct Series {
    count: u64,
    sum_s: f64,
    /// Per bucket (not cumulative); the last slot is +Inf.
    buckets: [u64; HTTP_BUCKETS_S.len() + 1],
}

/// HTTP requests by (method, route template, status).
#[derive(Default)]
pub struct HttpMetrics {
    series: Mutex<BTreeMap<(String, String, u16), Series>>,
}

impl HttpMetrics {
    fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let Ok(mut series) = self.series.lock() else {
            return;
        };
        let s = series
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        s.count += 1;
        s.sum_s += seconds;
        let slot = HTTP_BUCKETS_S
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(HTTP_BUCKETS_S.len());
        s.buckets[slot] += 1;
    }
}

/// Counts every request by its route template (never the raw path: ids would make the
/// label set unbounded).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    state.http_metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// A label value, escaped as the exposition format asks.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Every metric, in Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "system", security(("bearer" = [])),
    responses((status = 200, content_type = "text/plain", body = String,
               description = "Prometheus text exposition format 0.0.4")))]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut out = String::new();
    let reports = state.engine.reports();
    let sent = reports.sent();

    head(
        &mut out,
        "loaxa_packets_sent_total",
        "counter",
        "RTP packets handed to the network.",
    );
    let _ = writeln!(
        out,
        "loaxa_packets_sent_total {}",
        sent.packets.load(Ordering::Relaxed)
    );
    head(
        &mut out,
        "loaxa_bytes_sent_total",
        "counter",
        "RTP bytes (header and payload) handed to the network.",
    );
    let _ = writeln!(
        out,
        "loaxa_bytes_sent_total {}",
        sent.bytes.load(Ordering::Relaxed)
    );

    head(
        &mut out,
        "loaxa_pacer_lateness_seconds",
        "histogram",
        "How late the pacer woke for each tick, against its absolute deadline.",
    );
    let mut cumulative = 0;
    for (i, bound) in LATENESS_BUCKETS_US.iter().enumerate() {
        cumulative += sent.lateness[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "loaxa_pacer_lateness_seconds_bucket{{le=\"{}\"}} {cumulative}",
            *bound as f64 / 1e6
        );
    }
    cumulative += sent.lateness[LATENESS_BUCKETS_US.len()].load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "loaxa_pacer_lateness_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "loaxa_pacer_lateness_seconds_sum {}\nloaxa_pacer_lateness_seconds_count {}",
        sent.lateness_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        sent.ticks.load(Ordering::Relaxed)
    );

    let clusters = state.store.clusters().await?;
    let mut by_mode: BTreeMap<String, u64> = BTreeMap::new();
    let now = Instant::now();
    let mut registered = 0;
    for c in &clusters {
        let mode = serde_json::from_str::<crate::fleet::EndpointSpec>(&c.endpoint)
            .map(|e| e.mode)
            .unwrap_or_else(|_| "unknown".into());
        if mode == "registered" && state.engine.registry().registration(&c.id, now).is_some() {
            registered += 1;
        }
        *by_mode.entry(mode).or_default() += 1;
    }
    head(
        &mut out,
        "loaxa_clusters",
        "gauge",
        "Clusters configured, by endpoint mode.",
    );
    for (mode, n) in &by_mode {
        let _ = writeln!(out, "loaxa_clusters{{mode=\"{}\"}} {n}", label(mode));
    }
    head(
        &mut out,
        "loaxa_clusters_reachable_registered",
        "gauge",
        "Registered clusters (behind NAT) with a current address from their keepalives.",
    );
    let _ = writeln!(out, "loaxa_clusters_reachable_registered {registered}");
    head(
        &mut out,
        "loaxa_clusters_by_status",
        "gauge",
        "Clusters by health status (online, degraded, offline, unknown).",
    );
    for (status, n) in state.monitor.counts() {
        let _ = writeln!(out, "loaxa_clusters_by_status{{status=\"{status}\"}} {n}");
    }

    let relays = &state.relays;
    head(
        &mut out,
        "loaxa_relays_active",
        "gauge",
        "Live relays running now.",
    );
    let _ = writeln!(out, "loaxa_relays_active {}", relays.active());
    head(
        &mut out,
        "loaxa_relay_faults_total",
        "counter",
        "Relay faults: stalls, dropped connections, dead air, content that is not audio.",
    );
    let _ = writeln!(
        out,
        "loaxa_relay_faults_total {}",
        relays.faults_total.load(Ordering::Relaxed)
    );
    head(
        &mut out,
        "loaxa_relay_fallbacks_total",
        "counter",
        "Relays that fell back to their clip or stopped after lasting trouble.",
    );
    let _ = writeln!(
        out,
        "loaxa_relay_fallbacks_total {}",
        relays.fallbacks_total.load(Ordering::Relaxed)
    );

    head(
        &mut out,
        "loaxa_broadcasts_active",
        "gauge",
        "Broadcasts queued or on air, by priority.",
    );
    for (priority, n) in state.store.active_broadcasts_by_priority().await? {
        let _ = writeln!(
            out,
            "loaxa_broadcasts_active{{priority=\"{}\"}} {n}",
            label(&priority)
        );
    }

    head(
        &mut out,
        "loaxa_cluster_send_errors_total",
        "counter",
        "Datagrams to a cluster the network stack refused, by kind.",
    );
    for (cluster, e) in reports.all_send_errors() {
        let c = label(&cluster);
        for (kind, n) in [
            ("would_block", e.would_block),
            ("refused", e.refused),
            ("other", e.other),
            ("not_registered", e.not_registered),
        ] {
            let _ = writeln!(
                out,
                "loaxa_cluster_send_errors_total{{cluster=\"{c}\",kind=\"{kind}\"}} {n}"
            );
        }
    }
    head(
        &mut out,
        "loaxa_cluster_loss_ratio",
        "gauge",
        "Fraction of packets lost, from the cluster's latest RTCP receiver report.",
    );
    let receptions = reports.all_receptions();
    for (cluster, r) in &receptions {
        let _ = writeln!(
            out,
            "loaxa_cluster_loss_ratio{{cluster=\"{}\"}} {}",
            label(cluster),
            r.loss_pct / 100.0
        );
    }
    head(
        &mut out,
        "loaxa_cluster_jitter_seconds",
        "gauge",
        "Interarrival jitter, from the cluster's latest RTCP receiver report.",
    );
    for (cluster, r) in &receptions {
        let _ = writeln!(
            out,
            "loaxa_cluster_jitter_seconds{{cluster=\"{}\"}} {}",
            label(cluster),
            r.jitter_ms / 1000.0
        );
    }

    head(
        &mut out,
        "loaxa_http_requests_total",
        "counter",
        "HTTP requests, by method, route and status.",
    );
    let series = state
        .http_metrics
        .series
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    for ((method, route, status), s) in &series {
        let _ = writeln!(
            out,
            "loaxa_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {}",
            label(method),
            label(route),
            s.count
        );
    }
    head(
        &mut out,
        "loaxa_http_request_duration_seconds",
        "histogram",
        "HTTP request latency, by method and route.",
    );
    let mut by_route: BTreeMap<(&str, &str), Series> = BTreeMap::new();
    for ((method, route, _), s) in &series {
        let agg = by_route.entry((method, route)).or_default();
        agg.count += s.count;
        agg.sum_s += s.sum_s;
        for (a, b) in agg.buckets.iter_mut().zip(&s.buckets) {
            *a += b;
        }
    }
    for ((method, route), s) in &by_route {
        let labels = format!("method=\"{}\",route=\"{}\"", label(method), label(route));
        let mut cumulative = 0;
        for (i, bound) in HTTP_BUCKETS_S.iter().enumerate() {
            cumulative += s.buckets[i];
            let _ = writeln!(
                out,
                "loaxa_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "loaxa_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
             loaxa_http_request_duration_seconds_sum{{{labels}}} {}\n\
             loaxa_http_request_duration_seconds_count{{{labels}}} {}",
            s.count, s.sum_s, s.count
        );
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn requests_land_in_their_latency_bucket() {
        let m = HttpMetrics::default();
        m.record("GET", "/api/v1/areas", 200, 0.003);
        m.record("GET", "/api/v1/areas", 200, 7.0);
        let series = m.series.lock().unwrap();
        let s = &series[&("GET".to_string(), "/api/v1/areas".to_string(), 200)];
        assert_eq!(s.count, 2);
        assert_eq!(s.buckets[2], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(
            s.buckets[HTTP_BUCKETS_S.len()],
            1,
            "7 s is past the last bound"
        );
    }
}
