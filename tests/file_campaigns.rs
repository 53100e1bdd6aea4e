//! Campaigns from schedule files: loaded on SIGHUP, shown with `source: file` and
//! read-only in the API, updated when the file changes, removed when it goes; a file with
//! errors is not loaded.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn write_campaign(dir: &std::path::Path, cron: &str) {
    std::fs::create_dir_all(dir.join("announcements")).unwrap();
    std::fs::copy(
        fixture("announce-vi-vbr-1s.mp3"),
        dir.join("announcements/thong-bao.mp3"),
    )
    .unwrap();
    std::fs::write(
        dir.join("chuyen-doi-so.toml"),
        format!(
            r#"title = "Tuyên truyền chuyển đổi số"
topic = "chuyen-doi-so"
audio = ["announcements/thong-bao.mp3"]
targets = {{ areas = ["xa-vinh-hoa"] }}

[schedule]
cron = ["{cron}"]
"#
        ),
    )
    .unwrap();
}

fn hangup(app: &TestApp) {
    let pid = app.child.as_ref().unwrap().id();
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn wait_for(app: &TestApp, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = app.json_ok(path).await;
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path}: {v}\n{}", app.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn schedule_files_load_on_sighup_read_only_and_follow_their_file() {
    let schedules = tempfile::tempdir().unwrap();
    let dir = schedules.path().to_str().unwrap().to_string();
    let app = spawn_app_with_config_env("", &[("LOAXA_SCHEDULES_DIR", &dir)]).await;
    app.create_area("xa-vinh-hoa", None).await;

    // A file naming an area that does not exist is not loaded.
    write_campaign(schedules.path(), "0 6 * * *");
    let broken = std::fs::read_to_string(schedules.path().join("chuyen-doi-so.toml"))
        .unwrap()
        .replace("xa-vinh-hoa", "xa-khong-co");
    std::fs::write(schedules.path().join("broken.toml"), broken).unwrap();
    hangup(&app);
    let list = wait_for(&app, "/api/v1/campaigns", |v| {
        !v.as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let c = &list[0];
    assert_eq!(c["id"], "file:chuyen-doi-so");
    assert_eq!(c["source"], "file");
    assert_eq!(c["status"], "approved");
    assert_eq!(c["schedule"]["cron"], json!(["0 6 * * *"]));
    let audio = app
        .json_ok(&format!(
            "/api/v1/audio/{}",
            c["audio_ids"][0].as_str().unwrap()
        ))
        .await;
    assert_eq!(audio["duration_ms"].as_u64().unwrap() / 100, 10, "{audio}");
    assert!(app.stderr().contains("broken.toml:4:"), "{}", app.stderr());

    // Read-only in the API.
    let r = app
        .client
        .patch(app.url("/api/v1/campaigns/file:chuyen-doi-so"))
        .bearer_auth(TOKEN)
        .json(&json!({"paused": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = app
        .client
        .delete(app.url("/api/v1/campaigns/file:chuyen-doi-so"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // The file changes: so does the campaign (and its audio is not imported twice).
    write_campaign(schedules.path(), "30 17 * * 1-5");
    hangup(&app);
    wait_for(&app, "/api/v1/campaigns/file:chuyen-doi-so", |c| {
        c["schedule"]["cron"] == json!(["30 17 * * 1-5"])
    })
    .await;
    assert_eq!(
        app.json_ok("/api/v1/audio").await.as_array().unwrap().len(),
        1
    );

    // The file goes: so does the campaign.
    std::fs::remove_file(schedules.path().join("chuyen-doi-so.toml")).unwrap();
    hangup(&app);
    wait_for(&app, "/api/v1/campaigns", |v| {
        v.as_array().unwrap().is_empty()
    })
    .await;
}
