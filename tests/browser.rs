//! The dashboard in a real browser: headless Chromium, driven over WebDriver by a
//! chromedriver this test starts, against the real daemon and a real `loaxa agent`. Needs
//! Debian's `chromium` and `chromium-driver`, hence the `interop` feature (.ci/run
//! installs them). A failure leaves a screenshot in `target/browser-screenshots/`.

mod common;

use std::fmt::Display;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// chromedriver is listening within ~100 ms; a loaded 2-core CI machine is slower.
const DRIVER_READY_WITHIN: Duration = Duration::from_secs(10);
/// Starting Chromium itself, the slowest step of the test.
const SESSION_WITHIN: Duration = Duration::from_secs(20);
/// An agent heartbeats every second; room for its start-up.
const ONLINE_WITHIN: Duration = Duration::from_secs(5);
/// Sign-in is three requests and a render.
const PAGE_WITHIN: Duration = Duration::from_secs(5);
/// Offline is declared 3 s after the last heartbeat, which came up to 1 s before the
/// kill; the rest is the event stream and the render, with slack for a busy machine.
const OFFLINE_WITHIN: Duration = Duration::from_secs(10);

/// Health settings short enough for tests: a heartbeat a second, offline after 3 s.
const HEALTH: &str = "[health]\noffline_after_s = 3\nheartbeat_interval_s = 1\n";

#[tokio::test]
async fn a_technician_sees_a_cluster_go_offline_live() {
    const TEST: &str = "a_technician_sees_a_cluster_go_offline_live";
    let app = spawn_app_with_config(HEALTH).await;
    app.create_area("xa", None).await;
    let cluster = create_cluster(&app).await;
    let id = cluster["id"].as_str().expect("cluster id").to_string();
    let r = app
        .post_json(
            "/api/v1/users",
            &json!({"name": "Kỹ thuật viên", "role": "technician", "area_code": "xa"}),
        )
        .await;
    assert_eq!(r.status(), 201, "create technician");
    let user: Value = r.json().await.expect("json");
    let token = user["token"].as_str().expect("token").to_string();

    let mut agent = start_agent(&app, &cluster);
    let health = wait_health(&app, &id, "online", ONLINE_WITHIN).await;
    assert_eq!(health["status"], "online", "{health}");

    let driver = Chromedriver::start(app.dir.path());
    let page = Page::open(&driver, TEST).await;
    match technician_watches(&page, &app, &token, &id, &mut agent).await {
        Ok(()) => {
            page.close().await;
            // A screenshot from an earlier failing run would mislead.
            let _ = std::fs::remove_file(screenshot_path(TEST));
        }
        Err(why) => page.fail(&why).await,
    }
}

/// Steps 3 to 5, in the browser: every failure comes back as an error so that the caller
/// can take a screenshot before it panics.
async fn technician_watches(
    page: &Page,
    app: &TestApp,
    token: &str,
    id: &str,
    agent: &mut Agent,
) -> Result<(), String> {
    let c = &page.client;
    ctx(c.goto(&app.url("/")).await, "open the dashboard")?;
    page.find(r#"html[lang="vi"]"#, PAGE_WITHIN).await?;
    let signin = page.find("#signin", PAGE_WITHIN).await?;
    let label = ctx(signin.text().await, "sign-in button text")?;
    check(label == "Đăng nhập", || {
        format!("sign-in button says {label:?}")
    })?;
    check(ctx(signin.is_displayed().await, "sign-in shown")?, || {
        "the sign-in button is hidden".into()
    })?;

    let input = page.find("#token", PAGE_WITHIN).await?;
    ctx(input.send_keys(token).await, "type the token")?;
    ctx(signin.click().await, "click sign-in")?;
    let row = format!(r#"#health-list tr[data-cluster-id="{id}"]"#);
    let tile = format!(r#"#health-grid [data-cluster-id="{id}"]"#);
    page.find(&format!(r#"{row}[data-status="online"]"#), PAGE_WITHIN)
        .await?;
    page.find(&format!(r#"{tile}[data-status="online"]"#), PAGE_WITHIN)
        .await?;
    let who = ctx(
        page.find("#whoami", PAGE_WITHIN).await?.text().await,
        "#whoami",
    )?;
    check(who.contains("Kỹ thuật viên"), || {
        format!("signed in as {who:?}")
    })?;
    // Only a connected stream can bring the change without a reload.
    page.find(r#"#live[data-state="on"]"#, PAGE_WITHIN).await?;

    // A reload would wipe this; the page must change in place.
    ctx(
        c.execute("window.loaxaNotReloaded = true;", vec![]).await,
        "mark the page",
    )?;
    ctx(agent.0.kill(), "kill the agent")?;
    ctx(agent.0.wait(), "reap the agent")?;
    let killed = Instant::now();
    page.find(&format!(r#"{row}[data-status="offline"]"#), OFFLINE_WITHIN)
        .await?;
    let took = killed.elapsed();
    page.find(&format!(r#"{tile}[data-status="offline"]"#), PAGE_WITHIN)
        .await?;
    let kept = ctx(
        c.execute("return window.loaxaNotReloaded === true;", vec![])
            .await,
        "read the mark",
    )?;
    check(kept == Value::Bool(true), || {
        "the page reloaded instead of updating live".into()
    })?;
    let offline = ctx(
        page.find(r#"#counts [data-status="offline"] .n"#, PAGE_WITHIN)
            .await?
            .text()
            .await,
        "offline count",
    )?;
    check(offline == "1", || {
        format!("offline count is {offline:?} after {took:?}")
    })?;

    let lang = page.find("#lang", PAGE_WITHIN).await?;
    ctx(lang.click().await, "click the language switch")?;
    page.find(r#"html[lang="en"]"#, PAGE_WITHIN).await?;
    let status = ctx(
        page.find(&format!("{row} .c-status"), PAGE_WITHIN)
            .await?
            .text()
            .await,
        "status cell",
    )?;
    check(status.contains("Offline"), || {
        format!("status cell in English reads {status:?}")
    })?;
    Ok(())
}

/// A `loaxa agent` process, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(app: &TestApp, cluster: &Value) -> Agent {
    let log = std::fs::File::create(app.dir.path().join("agent.log")).expect("agent log");
    Agent(
        Command::new(env!("CARGO_BIN_EXE_loaxa"))
            .args(["agent", "--controller", &app.base, "--cluster"])
            .arg(cluster["id"].as_str().expect("id"))
            .args(["--output", "null", "--bind", "127.0.0.1"])
            .env(
                "LOAXA_AGENT_TOKEN",
                cluster["agent_token"].as_str().expect("agent token"),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start agent"),
    )
}

/// A unicast cluster in `xa` on a free loopback port pair (RTP, RTCP = +1).
async fn create_cluster(app: &TestApp) -> Value {
    let address: SocketAddr = Receiver::bind().addr();
    let r = app
        .post_json(
            "/api/v1/clusters",
            &json!({"name": "Cụm thôn 1", "area_code": "xa", "codec": "pcmu",
                    "endpoint": {"mode": "unicast", "address": address.to_string()}}),
        )
        .await;
    assert_eq!(r.status(), 201, "create cluster");
    r.json().await.expect("json")
}

async fn wait_health(app: &TestApp, id: &str, want: &str, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let v = app.json_ok(&format!("/api/v1/clusters/{id}/health")).await;
        if v["status"] == want || start.elapsed() > within {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// chromedriver on a free loopback port, in its own process group so that dropping it
/// takes the Chromium it started along.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start(log_dir: &Path) -> Chromedriver {
        assert!(
            Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: apt-get install chromium chromium-driver"
        );
        let log_path = log_dir.join("chromedriver.log");
        // The port is free when asked for and taken a moment later; someone else may
        // take it in between, so a driver that exits early is tried again on another.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let log = std::fs::File::create(&log_path).expect("chromedriver log");
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::from(log.try_clone().expect("log")))
                .stderr(Stdio::from(log))
                .process_group(0)
                .spawn()
                .expect("start chromedriver");
            let mut driver = Chromedriver { child, port };
            let start = Instant::now();
            while start.elapsed() < DRIVER_READY_WITHIN {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return driver;
                }
                if driver.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!(
            "chromedriver did not start:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The group is the driver and every Chromium process it started. Its id is the
        // driver's pid, which stays ours until we reap it below.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory
            // is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// One browser session on the dashboard, named after the test for its screenshot.
struct Page {
    client: Client,
    test: &'static str,
}

impl Page {
    async fn open(driver: &Chromedriver, test: &'static str) -> Page {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--window-size=1280,900"],
            }),
        );
        let connect = async {
            ClientBuilder::rustls()
                .expect("TLS roots")
                .capabilities(caps)
                .connect(&driver.url())
                .await
        };
        let client = tokio::time::timeout(SESSION_WITHIN, connect)
            .await
            .unwrap_or_else(|_| panic!("no Chromium session within {SESSION_WITHIN:?}"))
            .unwrap_or_else(|e| panic!("start a Chromium session: {e}"));
        Page { client, test }
    }

    /// Waits for an element matching `css`.
    async fn find(
        &self,
        css: &str,
        within: Duration,
    ) -> Result<fantoccini::elements::Element, String> {
        self.client
            .wait()
            .at_most(within)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
            .map_err(|e| format!("no `{css}` within {within:?}: {e}"))
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }

    /// Saves a screenshot, ends the session and panics with what the page showed.
    async fn fail(self, why: &str) -> ! {
        let shot = screenshot_path(self.test);
        let saved = match self.client.screenshot().await {
            Ok(png) => std::fs::create_dir_all(shot.parent().expect("dir"))
                .and_then(|()| std::fs::write(&shot, png))
                .map(|()| format!("screenshot: {}", shot.display()))
                .unwrap_or_else(|e| format!("screenshot not saved: {e}")),
            Err(e) => format!("screenshot not taken: {e}"),
        };
        let text = self
            .client
            .execute(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|e| format!("(page text unavailable: {e})"));
        let _ = self.client.close().await;
        panic!("{why}\n{saved}\n--- page text ---\n{text}");
    }
}

fn screenshot_path(test: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/browser-screenshots")
        .join(format!("{test}.png"))
}

fn ctx<T, E: Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}
