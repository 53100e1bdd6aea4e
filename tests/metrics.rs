//! `/metrics` in Prometheus text format, agreeing with what was sent.

mod common;

use std::time::Duration;

use common::*;

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn metrics_count_what_was_sent_and_the_requests_by_route() {
    let app = spawn_app().await;
    let rx = Receiver::bind();
    app.create_area("xa-a", None).await;
    let cluster = app.create_cluster("xa-a", "pcmu", rx.addr()).await;
    let audio = app.upload_ok(&fixture("announce-vi-vbr-1s.mp3")).await;
    let id = app
        .broadcast(audio["id"].as_str().unwrap(), &[&cluster])
        .await;
    let b = app.wait_status(&id, "done", Duration::from_secs(10)).await;
    let packets = b["clusters"][0]["packets_sent"].as_u64().unwrap();

    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401, "metrics need the token");
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    assert_eq!(value(&text, "loaxa_packets_sent_total") as u64, packets);
    assert_eq!(
        value(&text, "loaxa_bytes_sent_total") as u64,
        packets * (12 + 160)
    );
    assert_eq!(value(&text, "loaxa_clusters{mode=\"unicast\"}"), 1.0);
    assert!(value(&text, "loaxa_pacer_lateness_seconds_count") >= packets as f64);
    assert_eq!(
        value(&text, "loaxa_pacer_lateness_seconds_bucket{le=\"+Inf\"}"),
        value(&text, "loaxa_pacer_lateness_seconds_count")
    );
    // Requests are counted by route template, never by raw path.
    assert!(
        value(
            &text,
            "loaxa_http_requests_total{method=\"GET\",route=\"/api/v1/broadcasts/{id}\",status=\"200\"}"
        ) >= 1.0
    );
    assert!(!text.contains(&format!("route=\"/api/v1/broadcasts/{id}\"")));
    assert!(text.contains("# TYPE loaxa_http_request_duration_seconds histogram"));
}
