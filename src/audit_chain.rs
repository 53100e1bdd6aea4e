//! The audit log as a hash chain: the canonical encoding of a row, its hash, and the
//! verification that finds edited, deleted, reordered and unsealed rows. Everything here
//! is pure except [`verify_store`], which only reads through the store; nothing here
//! writes, and nothing here reads the clock.
//!
//! Each row's `hash` is `SHA-256(prev_hash || "\n" || canonical(row))` in lowercase hex,
//! where `prev_hash` is the previous row's `hash` ([`GENESIS`] for the first row) and
//! `canonical` is [`canonical`]. The chain shows tampering by anyone who cannot rewrite
//! every later row; against someone who can (it is unkeyed), compare [`VerifyReport::head_hash`]
//! with a copy kept elsewhere.

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// The `prev_hash` of the first row: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hashed content of one audit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRowView<'a> {
    pub seq: i64,
    pub at: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub result: &'a str,
}

/// One audit row as stored, with its chain columns (`None` where the column is NULL).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRowFull {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub result: String,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

impl AuditRowFull {
    pub fn view(&self) -> AuditRowView<'_> {
        AuditRowView {
            seq: self.seq,
            at: &self.at,
            actor: &self.actor,
            action: &self.action,
            target: self.target.as_deref(),
            detail: self.detail.as_deref(),
            result: &self.result,
        }
    }
}

/// The bytes a row's hash covers: its seven fields in the order
/// `seq, at, actor, action, target, detail, result`, each written as
/// `<byte length in decimal>:<UTF-8 bytes>,` (a netstring), except a NULL `target` or
/// `detail`, written `-,`. `seq` is its decimal text (`-` sign if negative). A reader can
/// split it without knowing the content, so no two rows encode the same, and `None`
/// differs from `Some("")`. Example: seq 1, at `t`, actor `admin`, action `a`, no target,
/// detail empty, result `ok` → `1:1,1:t,5:admin,1:a,-,0:,2:ok,`.
pub fn canonical(row: &AuditRowView) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, value: Option<&str>) {
        match value {
            Some(v) => {
                out.extend_from_slice(v.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(v.as_bytes());
            }
            None => out.push(b'-'),
        }
        out.push(b',');
    }
    let mut out = Vec::with_capacity(64 + row.at.len() + row.actor.len() + row.action.len());
    field(&mut out, Some(&row.seq.to_string()));
    field(&mut out, Some(row.at));
    field(&mut out, Some(row.actor));
    field(&mut out, Some(row.action));
    field(&mut out, row.target);
    field(&mut out, row.detail);
    field(&mut out, Some(row.result));
    out
}

/// `SHA-256(prev || "\n" || canonical(row))` in lowercase hex.
pub fn entry_hash(prev: &str, row: &AuditRowView) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(canonical(row));
    hex::encode(h.finalize())
}

/// One thing wrong with the chain, at the row it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub seq: i64,
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem)
    }
}

/// What [`verify_store`] (or a [`Verifier`]) found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Rows read.
    pub rows: u64,
    /// Empty when the chain is intact.
    pub findings: Vec<Finding>,
    /// The last row's seq.
    pub head_seq: Option<i64>,
    /// The last row's stored hash: kept elsewhere, it also shows a rewrite of the whole
    /// chain or the loss of its latest rows.
    pub head_hash: Option<String>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// One line: how many rows, intact or how many problems, and the head.
    pub fn summary(&self) -> String {
        let rows = match self.rows {
            1 => "1 row".to_string(),
            n => format!("{n} rows"),
        };
        let state = match self.findings.len() {
            0 => "chain intact".to_string(),
            1 => "1 problem".to_string(),
            n => format!("{n} problems"),
        };
        match (self.head_seq, &self.head_hash) {
            (Some(seq), Some(hash)) => format!("{rows}, {state}; head: row {seq} {hash}"),
            (Some(seq), None) => format!("{rows}, {state}; head: row {seq} (no hash)"),
            _ => format!("{rows}, {state}"),
        }
    }
}

/// The hash a row must link to, and how to name it in a finding.
type Link<'a> = (&'a str, String);

/// Checks rows one at a time, in seq order, keeping only the previous row: a log of any
/// length is verified in bounded memory (findings aside).
#[derive(Debug, Default)]
pub struct Verifier {
    last: Option<(i64, Option<String>)>,
    rows: u64,
    findings: Vec<Finding>,
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, row: &AuditRowFull) {
        self.rows += 1;
        let seq = row.seq;
        // What the previous row tells us: where the gap check starts, and the hash this
        // row must link to with its name for the message (None: nothing to compare).
        let (out_of_order, gap_from, link): (bool, i64, Option<Link>) = match &self.last {
            None => (false, 1, Some((GENESIS, "the genesis value".to_string()))),
            Some((p, _)) if seq <= *p => (true, seq, None),
            Some((p, hash)) => (
                false,
                p + 1,
                hash.as_deref().map(|h| (h, format!("row {p}'s hash"))),
            ),
        };
        // The findings alone, so the previous row stays borrowed while they grow.
        let out = &mut self.findings;
        let mut find = |seq: i64, problem: String| out.push(Finding { seq, problem });
        if out_of_order {
            let p = self.last.as_ref().map_or(0, |(p, _)| *p);
            find(
                seq,
                format!("row {seq} is out of order: it comes after row {p}"),
            );
        }
        let gap = !out_of_order && seq > gap_from;
        if gap {
            let missing = match (gap_from, seq - 1) {
                (a, b) if a == b => format!("row {a} is missing (deleted)"),
                (a, b) => format!("rows {a} to {b} are missing (deleted)"),
            };
            let problem = match &self.last {
                Some((p, _)) => format!("{missing}: the log jumps from row {p} to row {seq}"),
                None => format!("{missing}: the log starts at row {seq}"),
            };
            find(gap_from, problem);
        }
        let (Some(prev_hash), Some(hash)) = (&row.prev_hash, &row.hash) else {
            find(
                seq,
                format!("row {seq} has no hash: it was never sealed, or its hash was erased"),
            );
            self.last = Some((seq, row.hash.clone()));
            return;
        };
        if entry_hash(prev_hash, &row.view()) != *hash {
            find(
                seq,
                format!("row {seq} was edited: its hash does not match its content"),
            );
        }
        if let Some((expected, name)) = link
            && prev_hash != expected
        {
            let problem = if gap {
                format!("row {seq} follows a missing row: its prev_hash is not {name}")
            } else if self.last.is_none() {
                format!(
                    "row {seq} does not start the chain: its prev_hash is not {name} \
                     (rows before it were deleted, or it was rewritten)"
                )
            } else {
                format!(
                    "row {seq} does not follow the row before it: its prev_hash is not {name} \
                     (that row was rewritten, or rows were reordered)"
                )
            };
            find(seq, problem);
        }
        self.last = Some((seq, Some(hash.clone())));
    }

    /// The report. `highest_assigned` is the highest seq the store has ever handed out
    /// (SQLite's AUTOINCREMENT counter, which never goes back): rows after the last one
    /// read up to it were deleted from the end of the log.
    pub fn finish(mut self, highest_assigned: Option<i64>) -> VerifyReport {
        let last_seq = self.last.as_ref().map_or(0, |(s, _)| *s);
        if let Some(h) = highest_assigned
            && h > last_seq
        {
            let from = last_seq + 1;
            let missing = if from == h {
                format!("row {h} is missing (deleted)")
            } else {
                format!("rows {from} to {h} are missing (deleted)")
            };
            let problem = if self.last.is_some() {
                format!("{missing}: the log ends at row {last_seq} but seq {h} was handed out")
            } else {
                format!("{missing}: the log is empty but seq {h} was handed out")
            };
            self.find(from, problem);
        }
        let (head_seq, head_hash) = match self.last {
            Some((seq, hash)) => (Some(seq), hash),
            None => (None, None),
        };
        VerifyReport {
            rows: self.rows,
            findings: self.findings,
            head_seq,
            head_hash,
        }
    }

    fn find(&mut self, seq: i64, problem: String) {
        self.findings.push(Finding { seq, problem });
    }
}

/// Everything wrong with `rows`, taken in the order given (which should be seq order).
/// Empty when the chain is intact.
pub fn verify(rows: &[AuditRowFull]) -> Vec<Finding> {
    let mut v = Verifier::new();
    for row in rows {
        v.push(row);
    }
    v.finish(None).findings
}

/// Verifies the whole audit log of `store`, read in pages within one snapshot, and checks
/// that no row was deleted from its end. Writes nothing (it does not seal).
pub async fn verify_store(store: &Store) -> Result<VerifyReport, StoreError> {
    let mut v = Verifier::new();
    let highest = store.scan_audit_chain(|row| v.push(&row)).await?;
    Ok(v.finish(highest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64) -> AuditRowFull {
        AuditRowFull {
            seq,
            at: format!("2025-01-01T00:00:{:02}.000Z", seq % 60),
            actor: "admin".into(),
            action: "emergency.create".into(),
            target: (seq % 2 == 0).then(|| format!("b-{seq}")),
            detail: Some(format!("{{\"n\":{seq}}}")),
            result: "ok".into(),
            prev_hash: None,
            hash: None,
        }
    }

    fn seal(rows: &mut [AuditRowFull]) {
        let mut prev = GENESIS.to_string();
        for r in rows {
            let h = entry_hash(&prev, &r.view());
            r.prev_hash = Some(prev);
            r.hash = Some(h.clone());
            prev = h;
        }
    }

    fn chain(n: i64) -> Vec<AuditRowFull> {
        let mut rows: Vec<_> = (1..=n).map(row).collect();
        seal(&mut rows);
        rows
    }

    fn seqs(findings: &[Finding]) -> Vec<i64> {
        findings.iter().map(|f| f.seq).collect()
    }

    #[test]
    fn the_canonical_encoding_is_netstrings_in_a_fixed_order() {
        let r = AuditRowView {
            seq: 1,
            at: "t",
            actor: "admin",
            action: "a",
            target: None,
            detail: Some(""),
            result: "ok",
        };
        assert_eq!(canonical(&r), b"1:1,1:t,5:admin,1:a,-,0:,2:ok,");
        // Lengths count UTF-8 bytes, not characters: `ả` is three.
        let r = AuditRowView {
            actor: "bảo", ..r
        };
        assert_eq!(canonical(&r), "1:1,1:t,5:bảo,1:a,-,0:,2:ok,".as_bytes());
    }

    #[test]
    fn the_entry_hash_is_sha256_of_prev_newline_and_the_encoding() {
        let r = AuditRowView {
            seq: 1,
            at: "t",
            actor: "admin",
            action: "a",
            target: None,
            detail: Some(""),
            result: "ok",
        };
        // printf '%s\n%s' "$(printf '0%.0s' {1..64})" '1:1,1:t,5:admin,1:a,-,0:,2:ok,' | sha256sum
        assert_eq!(
            entry_hash(GENESIS, &r),
            "0a6086d3aa07785234229871222d893c53bed217cf5f68de41a50f6174baaba1"
        );
    }

    #[test]
    fn moving_text_between_fields_or_null_to_empty_changes_the_hash() {
        let a = AuditRowView {
            seq: 7,
            at: "t",
            actor: "ab",
            action: "c",
            target: None,
            detail: None,
            result: "ok",
        };
        let b = AuditRowView {
            actor: "a",
            action: "bc",
            ..a
        };
        let c = AuditRowView {
            target: Some(""),
            ..a
        };
        let d = AuditRowView {
            target: None,
            detail: Some(""),
            ..c
        };
        let hashes = [a, b, c, d].map(|r| entry_hash(GENESIS, &r));
        for i in 0..hashes.len() {
            for j in i + 1..hashes.len() {
                assert_ne!(hashes[i], hashes[j], "{i} and {j}");
            }
        }
    }

    #[test]
    fn an_intact_chain_has_no_findings() {
        assert_eq!(verify(&chain(6)), vec![]);
    }

    #[test]
    fn an_empty_log_has_no_findings() {
        assert_eq!(verify(&[]), vec![]);
        let report = Verifier::new().finish(None);
        assert!(report.is_clean());
        assert_eq!(report.head_hash, None);
    }

    #[test]
    fn an_edited_field_is_found_at_its_row_only() {
        let mut rows = chain(5);
        rows[2].detail = Some("x".into());
        let f = verify(&rows);
        assert_eq!(seqs(&f), vec![3]);
        assert_eq!(
            f[0].problem,
            "row 3 was edited: its hash does not match its content"
        );
    }

    #[test]
    fn an_edited_and_rehashed_row_breaks_the_link_of_the_next() {
        let mut rows = chain(5);
        rows[2].actor = "mallory".into();
        rows[2].hash = Some(entry_hash(
            rows[2].prev_hash.as_deref().unwrap(),
            &rows[2].view(),
        ));
        let f = verify(&rows);
        assert_eq!(seqs(&f), vec![4]);
        assert!(
            f[0].problem.starts_with(
                "row 4 does not follow the row before it: its prev_hash is not row 3's hash"
            ),
            "{}",
            f[0].problem
        );
    }

    #[test]
    fn a_deleted_middle_row_is_found() {
        let mut rows = chain(5);
        rows.remove(2);
        let f = verify(&rows);
        assert_eq!(seqs(&f), vec![3, 4]);
        assert_eq!(
            f[0].problem,
            "row 3 is missing (deleted): the log jumps from row 2 to row 4"
        );
        assert_eq!(
            f[1].problem,
            "row 4 follows a missing row: its prev_hash is not row 2's hash"
        );
    }

    #[test]
    fn deleted_rows_are_counted_as_a_range() {
        let mut rows = chain(6);
        rows.drain(1..4);
        let f = verify(&rows);
        assert_eq!(
            f[0].problem,
            "rows 2 to 4 are missing (deleted): the log jumps from row 1 to row 5"
        );
    }

    #[test]
    fn a_deleted_first_row_is_found() {
        let mut rows = chain(4);
        rows.remove(0);
        let f = verify(&rows);
        assert_eq!(seqs(&f), vec![1, 2]);
        assert_eq!(
            f[0].problem,
            "row 1 is missing (deleted): the log starts at row 2"
        );
        assert_eq!(
            f[1].problem,
            "row 2 follows a missing row: its prev_hash is not the genesis value"
        );
    }

    #[test]
    fn rows_renumbered_into_another_order_are_found() {
        // Rows 2 and 3 swap places: each moves to the other's seq with its hashes.
        let mut rows = chain(5);
        rows.swap(1, 2);
        rows[1].seq = 2;
        rows[2].seq = 3;
        let f = verify(&rows);
        assert!(f.iter().any(|f| f.seq == 2 && f.problem.contains("edited")));
        assert!(f.iter().any(|f| f.seq == 3 && f.problem.contains("edited")));
        assert!(
            f.iter()
                .any(|f| f.seq == 4 && f.problem.contains("prev_hash"))
        );
    }

    #[test]
    fn rows_given_out_of_seq_order_are_found() {
        let mut rows = chain(4);
        rows.swap(1, 2);
        let f = verify(&rows);
        assert!(
            f.iter()
                .any(|f| f.problem == "row 2 is out of order: it comes after row 3"),
            "{f:?}"
        );
    }

    #[test]
    fn a_row_without_a_hash_is_found_and_the_next_is_not_blamed() {
        let mut rows = chain(4);
        rows[1].hash = None;
        let f = verify(&rows);
        assert_eq!(seqs(&f), vec![2]);
        assert_eq!(
            f[0].problem,
            "row 2 has no hash: it was never sealed, or its hash was erased"
        );
        let mut rows = chain(2);
        rows[1].prev_hash = None;
        assert_eq!(seqs(&verify(&rows)), vec![2]);
    }

    #[test]
    fn rows_deleted_from_the_end_are_found_from_the_counter() {
        let rows = chain(3);
        let mut v = Verifier::new();
        rows.iter().for_each(|r| v.push(r));
        let report = v.finish(Some(5));
        assert_eq!(seqs(&report.findings), vec![4]);
        assert_eq!(
            report.findings[0].problem,
            "rows 4 to 5 are missing (deleted): the log ends at row 3 but seq 5 was handed out"
        );
        assert_eq!(report.head_seq, Some(3));
        assert_eq!(report.head_hash, rows[2].hash);

        let report = Verifier::new().finish(Some(1));
        assert_eq!(
            report.findings[0].problem,
            "row 1 is missing (deleted): the log is empty but seq 1 was handed out"
        );
    }

    #[test]
    fn the_summary_names_the_head() {
        let rows = chain(2);
        let mut v = Verifier::new();
        rows.iter().for_each(|r| v.push(r));
        let report = v.finish(Some(2));
        assert_eq!(
            report.summary(),
            format!(
                "2 rows, chain intact; head: row 2 {}",
                rows[1].hash.as_deref().unwrap()
            )
        );
    }
}
