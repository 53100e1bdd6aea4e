//! The HTTP contract: auth, validation, problem+json, and nothing half-written when a
//! request is refused.

mod common;

use common::*;
use serde_json::{Value, json};

async fn assert_problem(r: reqwest::Response, status: u16, field: Option<&str>) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].is_string() && body["title"].is_string());
    assert!(!body["detail"].as_str().unwrap().is_empty());
    if let Some(field) = field {
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors in {body}"))
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{field} not in {fields:?}");
    }
    body
}

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready, json!({"store": true, "pacer": true}));
}

#[tokio::test]
async fn every_api_route_refuses_a_missing_or_wrong_token() {
    // Far more failures than the per-address limit allows: the limit is off here (it has
    // its own test in tests/security.rs).
    let app = spawn_app_with_config("[server]\nmax_auth_failures_per_minute = 0\n").await;
    // Every route the OpenAPI document lists under /api/, so a new route cannot be
    // forgotten here.
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/") || path == "/api/v1/openapi.json" {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let concrete: String = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            routes.push((method.to_uppercase(), concrete));
        }
    }
    assert!(
        routes.len() >= 24,
        "only {} routes: {routes:?}",
        routes.len()
    );
    for (method, path) in routes {
        for token in [None, Some("wrong-token-wrong-token"), Some("")] {
            let mut req = app.client.request(method.parse().unwrap(), app.url(&path));
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"loaxa\"");
            assert_problem(r, 401, None).await;
        }
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/api/v1/areas", "post"),
        ("/api/v1/areas", "get"),
        ("/api/v1/areas/{code}", "get"),
        ("/api/v1/clusters", "post"),
        ("/api/v1/clusters", "get"),
        ("/api/v1/clusters/{id}", "get"),
        ("/api/v1/clusters/{id}", "delete"),
        ("/api/v1/clusters/{id}/sdp", "get"),
        ("/api/v1/audio", "post"),
        ("/api/v1/audio", "get"),
        ("/api/v1/audio/{id}", "get"),
        ("/api/v1/audio/{id}", "delete"),
        ("/api/v1/broadcasts", "post"),
        ("/api/v1/broadcasts", "get"),
        ("/api/v1/broadcasts/{id}", "get"),
        ("/api/v1/broadcasts/{id}/cancel", "post"),
        ("/api/v1/campaigns", "post"),
        ("/api/v1/campaigns", "get"),
        ("/api/v1/campaigns/{id}", "get"),
        ("/api/v1/campaigns/{id}", "patch"),
        ("/api/v1/campaigns/{id}", "delete"),
        ("/api/v1/campaigns/{id}/approve", "post"),
        ("/api/v1/campaigns/{id}/occurrences", "get"),
        ("/api/v1/reports/airtime", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
}

#[tokio::test]
async fn areas_form_a_tree_and_bad_areas_are_refused_by_field() {
    let app = spawn_app().await;
    app.create_area("tinh-a", None).await;
    app.create_area("xa-b", Some("tinh-a")).await;
    let node = app.json_ok("/api/v1/areas/tinh-a").await;
    assert_eq!(node["children"], json!(["xa-b"]));
    assert_eq!(
        app.json_ok("/api/v1/areas").await.as_array().unwrap().len(),
        2
    );

    let dup = app
        .post_json(
            "/api/v1/areas",
            &json!({"code": "xa-b", "name": "again", "kind": "commune"}),
        )
        .await;
    assert_problem(dup, 409, None).await;
    let orphan = app
        .post_json(
            "/api/v1/areas",
            &json!({"code": "thon-c", "name": "C", "kind": "hamlet", "parent_code": "nowhere"}),
        )
        .await;
    assert_problem(orphan, 422, Some("parent_code")).await;
    let bad = app
        .post_json(
            "/api/v1/areas",
            &json!({"code": "Xã B", "name": "", "kind": "commune"}),
        )
        .await;
    let body = assert_problem(bad, 422, Some("code")).await;
    assert!(
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "name")
    );
    let missing = app.get("/api/v1/areas/nowhere").await;
    assert_problem(missing, 404, None).await;
}

#[tokio::test]
async fn malformed_json_and_unknown_fields_are_clear_errors() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/v1/areas"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"code\": ")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, None).await;
    let r = app
        .client
        .post(app.url("/api/v1/areas"))
        .bearer_auth(TOKEN)
        .body("code=x")
        .send()
        .await
        .unwrap();
    assert_problem(r, 415, None).await;
    let r = app
        .post_json(
            "/api/v1/areas",
            &json!({"code": "x", "name": "X", "kind": "k", "colour": 1}),
        )
        .await;
    assert_problem(r, 422, Some("colour")).await;
    let r = app
        .post_json("/api/v1/areas", &json!({"name": "X", "kind": "k"}))
        .await;
    assert_problem(r, 422, Some("code")).await;
    let r = app
        .post_json(
            "/api/v1/areas",
            &json!({"code": "x", "name": 7, "kind": "k"}),
        )
        .await;
    assert_problem(r, 422, Some("name")).await;
    // Just over the 1 MB JSON limit: small enough that the whole body is read before the
    // answer, so the client sees the 413 rather than a reset connection.
    let r = app
        .client
        .post(app.url("/api/v1/areas"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(vec![b' '; 1024 * 1024 + 100])
        .send()
        .await
        .unwrap();
    assert_problem(r, 413, None).await;
    // Still serving after all that.
    assert_eq!(app.get("/api/v1/areas").await.status(), 200);
}

#[tokio::test]
async fn bad_clusters_are_refused_by_field_and_none_is_stored() {
    let app = spawn_app().await;
    app.create_area("xa-a", None).await;
    let cases = [
        (
            json!({"name": "c", "area_code": "xa-a", "codec": "pcmu",
                "endpoint": {"mode": "unicast", "address": "loa.local:5004"}}),
            "endpoint.address",
        ),
        (
            json!({"name": "c", "area_code": "xa-a", "codec": "pcmu",
                "endpoint": {"mode": "unicast", "address": "10.0.0.1"}}),
            "endpoint.address",
        ),
        (
            json!({"name": "c", "area_code": "xa-a", "codec": "pcmu",
                "endpoint": {"mode": "unicast"}}),
            "endpoint.address",
        ),
        (
            json!({"name": "c", "area_code": "xa-a", "codec": "pcmu",
                "endpoint": {"mode": "satellite", "address": "10.0.0.1:5004"}}),
            "endpoint.mode",
        ),
        (
            json!({"name": "c", "area_code": "nowhere", "codec": "pcmu",
                "endpoint": {"mode": "unicast", "address": "10.0.0.1:5004"}}),
            "area_code",
        ),
        (
            json!({"name": "c", "area_code": "xa-a", "codec": "mp3",
                "endpoint": {"mode": "unicast", "address": "10.0.0.1:5004"}}),
            "codec",
        ),
        (
            json!({"name": "c", "area_code": "xa-a", "codec": "pcmu", "ptime_ms": 25,
                "endpoint": {"mode": "unicast", "address": "10.0.0.1:5004"}}),
            "ptime_ms",
        ),
        (
            json!({"name": "c", "area_code": "xa-a", "codec": "pcmu", "volume": 101,
                "endpoint": {"mode": "unicast", "address": "10.0.0.1:5004"}}),
            "volume",
        ),
        (
            json!({"name": "c", "area_code": "xa-a", "codec": "pcmu"}),
            "endpoint",
        ),
    ];
    for (body, field) in cases {
        let r = app.post_json("/api/v1/clusters", &body).await;
        assert_problem(r, 422, Some(field)).await;
    }
    assert_eq!(app.json_ok("/api/v1/clusters").await, json!([]));
    for path in ["/api/v1/clusters/nope", "/api/v1/clusters/nope/sdp"] {
        assert_problem(app.get(path).await, 404, None).await;
    }
    let r = app
        .client
        .delete(app.url("/api/v1/clusters/nope"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, None).await;
}

#[tokio::test]
async fn a_cluster_can_be_listed_by_area_read_and_deleted() {
    let app = spawn_app().await;
    app.create_area("xa-a", None).await;
    app.create_area("xa-b", None).await;
    let a = app
        .create_cluster("xa-a", "pcma", "127.0.0.1:40000".parse().unwrap())
        .await;
    app.create_cluster("xa-b", "pcmu", "127.0.0.1:40002".parse().unwrap())
        .await;
    let only_a = app.json_ok("/api/v1/clusters?area=xa-a").await;
    assert_eq!(only_a.as_array().unwrap().len(), 1);
    assert_eq!(only_a[0]["id"], a.as_str());
    assert_eq!(only_a[0]["codec"], "pcma");
    assert_eq!(only_a[0]["ptime_ms"], 20);
    let sdp = app.get(&format!("/api/v1/clusters/{a}/sdp")).await;
    assert_eq!(sdp.headers()["content-type"], "application/sdp");
    let text = sdp.text().await.unwrap();
    assert!(text.contains("m=audio 40000 RTP/AVP 8\r\n"), "{text}");
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/clusters/{a}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.get(&format!("/api/v1/clusters/{a}")).await.status(),
        404
    );
}

#[tokio::test]
async fn uploads_in_each_format_report_what_they_are() {
    let app = spawn_app().await;
    for (file, format, rate, channels) in [
        ("announce-vi-48k-24bit-stereo.wav", "wav", 48000, 2),
        ("announce-vi.mp3", "mp3", 44100, 2),
        ("announce-vi.flac", "flac", 22050, 1),
        ("announce-vi.ogg", "ogg", 22050, 1),
    ] {
        let a = app.upload_ok(&fixture(file)).await;
        assert_eq!(a["format"], format, "{file}");
        assert_eq!(a["sample_rate"], rate, "{file}");
        assert_eq!(a["channels"], channels, "{file}");
        assert_eq!(a["title"], "Thông báo");
        assert!(a["loudness_lufs"].as_f64().unwrap() < -10.0, "{file}");
        let ms = a["duration_ms"].as_u64().unwrap();
        let expected = if file.contains("48k") { 2000 } else { 10190 };
        assert!(ms.abs_diff(expected) <= 60, "{file}: {ms} ms");
        let id = a["id"].as_str().unwrap();
        assert_eq!(app.json_ok(&format!("/api/v1/audio/{id}")).await["id"], id);
    }
    assert_eq!(
        app.json_ok("/api/v1/audio").await.as_array().unwrap().len(),
        4
    );
}

#[tokio::test]
async fn broken_uploads_are_refused_and_leave_nothing_behind() {
    let app = spawn_app().await;
    for file in [
        "broken-empty.mp3",
        "broken-truncated.mp3",
        "broken-random.wav",
        "broken-text.mp3",
        "broken-header-only.wav",
    ] {
        let r = app.upload(&fixture(file), "hỏng").await;
        let status = r.status().as_u16();
        assert!(status == 415 || status == 422, "{file}: {status}");
        let body = assert_problem(r, status, None).await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("not usable audio"),
            "{file}: {body}"
        );
    }
    let r = app
        .client
        .post(app.url("/api/v1/audio"))
        .bearer_auth(TOKEN)
        .multipart(reqwest::multipart::Form::new().text("title", "no file"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, Some("file")).await;
    let r = app
        .client
        .post(app.url("/api/v1/audio"))
        .bearer_auth(TOKEN)
        .json(&json!({"file": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 415, None).await;
    assert_eq!(app.json_ok("/api/v1/audio").await, json!([]));
    let stored: Vec<_> = std::fs::read_dir(app.dir.path().join("data/audio"))
        .unwrap()
        .collect();
    assert!(stored.is_empty(), "files left behind: {stored:?}");
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn bad_broadcasts_name_the_field_and_store_nothing() {
    let app = spawn_app().await;
    app.create_area("xa-a", None).await;
    app.create_area("xa-empty", None).await;
    let cluster = app
        .create_cluster("xa-a", "pcmu", "127.0.0.1:40000".parse().unwrap())
        .await;
    let audio = app.upload_ok(&fixture("announce-vi.ogg")).await;
    let id = audio["id"].as_str().unwrap();
    let cases = [
        (
            json!({"audio_ids": [], "targets": {"clusters": [cluster]}}),
            "audio_ids",
        ),
        (
            json!({"audio_ids": ["nope"], "targets": {"clusters": [cluster]}}),
            "audio_ids[0]",
        ),
        (json!({"audio_ids": [id], "targets": {}}), "targets"),
        (
            json!({"audio_ids": [id], "targets": {"areas": ["nowhere"]}}),
            "targets.areas[0]",
        ),
        (
            json!({"audio_ids": [id], "targets": {"clusters": ["nope"]}}),
            "targets.clusters[0]",
        ),
        (
            json!({"audio_ids": [id], "targets": {"areas": ["xa-empty"]}}),
            "targets",
        ),
        (
            json!({"audio_ids": [id], "targets": {"clusters": [cluster]}, "priority": "emergency"}),
            "priority",
        ),
        (
            json!({"audio_ids": [id], "targets": {"clusters": [cluster]}, "priority": "loud"}),
            "priority",
        ),
        (
            json!({"audio_ids": [id], "targets": {"clusters": [cluster]}, "repeat": 0}),
            "repeat",
        ),
        (
            json!({"audio_ids": [id], "targets": {"clusters": [cluster]}, "repeat": -1}),
            "repeat",
        ),
    ];
    for (body, field) in cases {
        let r = app.post_json("/api/v1/broadcasts", &body).await;
        assert_problem(r, 422, Some(field)).await;
    }
    assert_eq!(app.json_ok("/api/v1/broadcasts").await, json!([]));
    assert_problem(app.get("/api/v1/broadcasts/nope").await, 404, None).await;
    let r = app
        .post_json("/api/v1/broadcasts/nope/cancel", &json!({}))
        .await;
    assert_problem(r, 404, None).await;
    let r = app.get("/api/v1/broadcasts?from=yesterday").await;
    assert_problem(r, 422, Some("from")).await;
}

#[tokio::test]
async fn the_as_run_log_filters_by_time_and_area() {
    let app = spawn_app().await;
    app.create_area("xa-a", None).await;
    app.create_area("xa-b", None).await;
    let rx = Receiver::bind();
    let cluster = app.create_cluster("xa-a", "pcmu", rx.addr()).await;
    let audio = app
        .upload_ok(&fixture("announce-vi-48k-24bit-stereo.wav"))
        .await;
    let id = app
        .broadcast(audio["id"].as_str().unwrap(), &[&cluster])
        .await;
    let in_a = app.json_ok("/api/v1/broadcasts?area=xa-a").await;
    assert_eq!(in_a[0]["id"], id.as_str());
    assert_eq!(app.json_ok("/api/v1/broadcasts?area=xa-b").await, json!([]));
    let future = app
        .json_ok("/api/v1/broadcasts?from=2999-01-01T00:00:00%2B07:00")
        .await;
    assert_eq!(future, json!([]));
    // An announcement that is airing cannot be deleted from under it.
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/audio/{}", audio["id"].as_str().unwrap())))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_problem(r, 409, None).await;
}

#[tokio::test]
async fn a_schedule_preview_lists_the_next_airings_and_quiet_hour_clashes_and_names_a_bad_rule() {
    let app = spawn_app_with_config_env("", &[("LOAXA_QUIET_HOURS", "22:00-05:00")]).await;
    // Mondays and Wednesdays at 06:30, read in the site's timezone (Asia/Ho_Chi_Minh).
    let r = app
        .post_json(
            "/api/v1/schedule/preview",
            &json!({"cron": ["30 6 * * 1,3"], "from": "2026-12-01T00:00:00+07:00", "count": 4}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["timezone"], "Asia/Ho_Chi_Minh");
    assert_eq!(v["cron"], json!(["30 6 * * 1,3"]));
    assert_eq!(
        v["next"],
        json!([
            "2026-12-02T06:30:00+07:00",
            "2026-12-07T06:30:00+07:00",
            "2026-12-09T06:30:00+07:00",
            "2026-12-14T06:30:00+07:00"
        ])
    );
    assert_eq!(v["quiet_hours"], "22:00-05:00");
    assert_eq!(v["quiet_hours_clash"], json!([]));

    // The date window bounds it; a rule at 23:00 runs into quiet hours.
    let r = app
        .post_json(
            "/api/v1/schedule/preview",
            &json!({"cron": ["0 23 * * *"], "from": "2026-12-01T00:00:00+07:00",
                    "starts_on": "2026-12-30", "ends_on": "2026-12-31"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["next"],
        json!(["2026-12-30T23:00:00+07:00", "2026-12-31T23:00:00+07:00"])
    );
    assert_eq!(v["quiet_hours_clash"], v["next"]);

    // Bad input is named by field, as the request names it.
    let r = app
        .post_json("/api/v1/schedule/preview", &json!({"cron": ["61 6 * * *"]}))
        .await;
    let body = assert_problem(r, 422, Some("cron[0]")).await;
    assert!(
        body["detail"].as_str().unwrap().contains("cron[0]"),
        "{body}"
    );
    let r = app
        .post_json(
            "/api/v1/schedule/preview",
            &json!({"cron": ["0 6 * * *"], "timezone": "Mars/Olympus", "count": 0,
                    "audio_ids": ["nope"]}),
        )
        .await;
    let body = assert_problem(r, 422, Some("timezone")).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"count") && fields.contains(&"audio_ids[0]"),
        "{fields:?}"
    );
    let r = app
        .post_json("/api/v1/schedule/preview", &json!({"cron": []}))
        .await;
    assert_problem(r, 422, Some("cron")).await;
    // A preview stores nothing.
    assert_eq!(app.json_ok("/api/v1/campaigns").await, json!([]));
}
