//! The audit chain on a real SQLite file: appends through the store verify clean, even
//! when many land at once; the schema refuses to edit or delete rows; and when someone
//! with the file drops the triggers and edits or deletes a row anyway, verification
//! names the row.

use loaxa::audit_chain::{VerifyReport, verify_store};
use loaxa::store::{AuditEntry, Store};
use sqlx::{Connection, SqliteConnection};

struct Log {
    _dir: tempfile::TempDir,
    url: String,
    store: Store,
}

/// A store on a fresh file, opened as the daemon opens it (`sqlite://` + path, as
/// `Config::database_url` builds it), with `n` entries appended.
async fn log_with(n: usize) -> Log {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("loaxa.db").display());
    let store = Store::open(&url).await.expect("open the store");
    for i in 1..=n {
        let detail = format!("{{\"volume\":{i}}}");
        store
            .audit(AuditEntry {
                actor: "admin",
                action: "cluster.update",
                target: Some("c-1"),
                detail: Some(&detail),
                result: "ok",
            })
            .await
            .expect("append");
    }
    Log {
        _dir: dir,
        url,
        store,
    }
}

/// A connection of its own on the same file, as someone with the file would have.
async fn raw(log: &Log) -> SqliteConnection {
    SqliteConnection::connect(&log.url).await.expect("connect")
}

async fn verify(log: &Log) -> VerifyReport {
    verify_store(&log.store).await.expect("verify")
}

async fn drop_triggers(conn: &mut SqliteConnection) {
    for t in ["audit_no_delete", "audit_no_update", "audit_no_replace"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TRIGGER {t}")))
            .execute(&mut *conn)
            .await
            .expect("drop trigger");
    }
}

#[tokio::test]
async fn entries_appended_through_the_store_verify_clean() {
    let log = log_with(5).await;
    let report = verify(&log).await;
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.rows, 5);
    assert_eq!(report.head_seq, Some(5));
    assert_eq!(report.head_hash.as_deref().map(str::len), Some(64));
}

#[tokio::test]
async fn appends_racing_each_other_never_fork_the_chain() {
    let log = log_with(0).await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = log.store.clone();
            tokio::spawn(async move {
                let detail = format!("writer {i}");
                store
                    .audit(AuditEntry {
                        actor: "admin",
                        action: "race",
                        target: None,
                        detail: Some(&detail),
                        result: "ok",
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("append");
    }
    let report = verify(&log).await;
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.rows, 40);
}

#[tokio::test]
async fn the_schema_refuses_to_edit_or_delete_a_row() {
    let log = log_with(3).await;
    let mut conn = raw(&log).await;
    for sql in [
        "UPDATE audit SET detail = 'x' WHERE seq = 2",
        "UPDATE audit SET hash = NULL, prev_hash = NULL WHERE seq = 2",
        "DELETE FROM audit WHERE seq = 2",
        "DELETE FROM audit",
    ] {
        let err = sqlx::query(sql)
            .execute(&mut conn)
            .await
            .expect_err(sql)
            .to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    conn.close().await.expect("close");
    assert!(verify(&log).await.is_clean());
}

#[tokio::test]
async fn a_row_edited_behind_the_triggers_is_found() {
    let log = log_with(5).await;
    let mut conn = raw(&log).await;
    drop_triggers(&mut conn).await;
    sqlx::query("UPDATE audit SET detail = 'x' WHERE seq = 3")
        .execute(&mut conn)
        .await
        .expect("edit");
    conn.close().await.expect("close");

    let report = verify(&log).await;
    let problems: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.seq, &*f.problem))
        .collect();
    assert_eq!(
        problems,
        [(3, "row 3 was edited: its hash does not match its content")]
    );
}

#[tokio::test]
async fn a_row_deleted_behind_the_triggers_is_found() {
    let log = log_with(5).await;
    let mut conn = raw(&log).await;
    drop_triggers(&mut conn).await;
    sqlx::query("DELETE FROM audit WHERE seq = 2")
        .execute(&mut conn)
        .await
        .expect("delete");
    conn.close().await.expect("close");

    let report = verify(&log).await;
    assert_eq!(report.rows, 4);
    let problems: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.seq, &*f.problem))
        .collect();
    assert_eq!(
        problems,
        [
            (
                2,
                "row 2 is missing (deleted): the log jumps from row 1 to row 3"
            ),
            (
                3,
                "row 3 follows a missing row: its prev_hash is not row 1's hash"
            ),
        ]
    );
}

#[tokio::test]
async fn the_last_rows_deleted_behind_the_triggers_are_found() {
    let log = log_with(5).await;
    let mut conn = raw(&log).await;
    drop_triggers(&mut conn).await;
    sqlx::query("DELETE FROM audit WHERE seq >= 4")
        .execute(&mut conn)
        .await
        .expect("delete");
    conn.close().await.expect("close");

    let report = verify(&log).await;
    assert_eq!(report.head_seq, Some(3));
    let seqs: Vec<_> = report.findings.iter().map(|f| f.seq).collect();
    assert_eq!(seqs, [4], "{:?}", report.findings);
}

/// `loaxa audit verify` over a database at `data_dir`: its exit code and stdout.
fn verify_cli(data_dir: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loaxa"))
        .args(["audit", "verify"])
        .env("LOAXA_DATA_DIR", data_dir)
        .output()
        .expect("run loaxa audit verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn loaxa_audit_verify_catches_a_row_edited_directly_in_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let url = format!("sqlite://{}", data.join("loaxa.db").display());
    {
        // What the daemon writes: users made on the host, then actions.
        let store = Store::open(&url).await.unwrap();
        for i in 1..=4 {
            let detail = format!("step {i}");
            store
                .audit(AuditEntry {
                    actor: "admin",
                    action: "broadcast.start",
                    target: Some("b-1"),
                    detail: Some(&detail),
                    result: "ok",
                })
                .await
                .unwrap();
        }
        store.close().await;
    }
    let (code, out) = verify_cli(&data);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4 rows"), "{out}");

    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    drop_triggers(&mut conn).await;
    sqlx::query("UPDATE audit SET actor = 'someone-else' WHERE seq = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (code, out) = verify_cli(&data);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("row 2 was edited"), "{out}");

    // No database: a clear error, nothing created.
    let empty = dir.path().join("nothing-here");
    let (code, _) = verify_cli(&empty);
    assert_eq!(code, 2);
    assert!(!empty.join("loaxa.db").exists());
}

#[test]
fn loaxa_users_add_gives_a_locked_out_admin_a_token_on_the_host() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The store exists once the daemon has run; opening it here creates it the same way.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = format!("sqlite://{}?mode=rwc", data.join("loaxa.db").display());
        Store::open(&url).await.unwrap().close().await;
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loaxa"))
        .args(["users", "add", "--name", "Rescue", "--role", "admin"])
        .env("LOAXA_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(user["role"], "admin");
    assert_eq!(user["token"].as_str().unwrap().len(), 64);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loaxa"))
        .args(["users", "add", "--name", "X", "--role", "officer"])
        .env("LOAXA_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("area_code"));
    let (code, out) = verify_cli(&data);
    assert_eq!(code, 0, "{out}");
}
