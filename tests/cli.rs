//! The command line: configuration errors are clear and stop the daemon before it starts.

mod common;

use std::process::Command;

use common::*;

fn serve(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loaxa"));
    cmd.arg("serve")
        .args(args)
        .env("LOAXA_DATA_DIR", dir.path())
        .env("LOAXA_LISTEN", "127.0.0.1:0")
        .env("LOAXA_RTP_PORT", "0")
        .env_remove("LOAXA_ADMIN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn a_missing_config_file_is_named_and_exits_2() {
    let out = serve(&["--config", "/nonexistent/loaxa.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/loaxa.toml"), "{err}");
}

#[test]
fn a_bad_environment_override_is_named_and_exits_2() {
    let out = serve(&[], &[("LOAXA_LISTEN", "not-an-address")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LOAXA_LISTEN"), "{err}");
}

#[test]
fn an_unknown_config_key_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[audio]\nmax_upload = 3\n").unwrap();
    let out = serve(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_upload"), "{err}");
}

#[tokio::test]
async fn an_upload_over_the_configured_size_is_refused_with_413() {
    let app = spawn_app_with_config("[audio]\nmax_upload_mb = 1\n").await;
    // 1.5 MB of a valid WAV: refused for its size, before any decoding.
    let mut wav = std::fs::read(fixture("announce-vi-48k-24bit-stereo.wav")).unwrap();
    wav.extend(std::iter::repeat_n(0u8, 1_000_000));
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(wav).file_name("big.wav"),
    );
    let r = app
        .client
        .post(app.url("/api/v1/audio"))
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await;
    // The daemon may answer before the client has sent everything and close the
    // connection; the answer it sent is what counts when the client saw it.
    match r {
        Ok(r) => {
            assert_eq!(r.status(), 413);
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
        Err(e) => assert!(e.is_request() || e.is_body(), "unexpected error {e}"),
    }
    assert_eq!(app.json_ok("/api/v1/audio").await, serde_json::json!([]));
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn without_a_configured_token_one_is_generated_printed_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |data: std::path::PathBuf| {
        Command::new(env!("CARGO_BIN_EXE_loaxa"))
            .arg("serve")
            .env("LOAXA_DATA_DIR", data)
            .env("LOAXA_LISTEN", "127.0.0.1:0")
            .env("LOAXA_RTP_PORT", "0")
            .env_remove("LOAXA_ADMIN_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let read_until_listening = |child: &mut std::process::Child| {
        use std::io::BufRead;
        let stdout = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("listening on ");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    };
    let mut first = run(data.clone());
    let lines = read_until_listening(&mut first);
    let token = lines
        .iter()
        .find_map(|l| l.split("admin token (shown once, keep it safe): ").nth(1))
        .expect("token printed")
        .to_string();
    let base = lines
        .last()
        .unwrap()
        .trim_start_matches("listening on ")
        .to_string();
    let client = reqwest::Client::new();
    let ok = client
        .get(format!("{base}/api/v1/areas"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let _ = first.kill();
    let _ = first.wait();

    let mut second = run(data);
    let lines = read_until_listening(&mut second);
    assert!(
        !lines.iter().any(|l| l.contains("admin token")),
        "printed again: {lines:?}"
    );
    let base = lines
        .last()
        .unwrap()
        .trim_start_matches("listening on ")
        .to_string();
    let ok = client
        .get(format!("{base}/api/v1/areas"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "the kept token still works");
    let _ = second.kill();
    let _ = second.wait();
}
