//! `/api/v1/reports`: airtime, the figure communes put in their monthly reports. Minutes
//! aired are counted from the packets actually sent to each cluster (packets × packet
//! duration), so an interrupted or cancelled airing counts for what went out.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::access::Principal;
use super::problem::Query;
use super::problem::{ApiError, Problem};
use crate::store::{AirtimeGroup, AirtimeRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(airtime))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct AirtimeQuery {
    /// RFC 3339, inclusive.
    from: String,
    /// RFC 3339, exclusive.
    to: String,
    /// Only clusters in this area's subtree.
    area: Option<String>,
    /// `topic` (default), `area` or `campaign`.
    group_by: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Airtime {
    from: String,
    to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    area: Option<String>,
    group_by: String,
    /// Largest first.
    rows: Vec<AirtimeEntry>,
    total_minutes: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AirtimeEntry {
    /// The topic, area code or campaign id (empty: none, e.g. play-now broadcasts have no
    /// campaign).
    key: String,
    /// A readable name: the campaign's title, or the key.
    label: String,
    /// Minutes of audio aired, summed over clusters.
    minutes: f64,
    /// Distinct broadcasts.
    airings: i64,
    /// Distinct clusters.
    clusters: i64,
}

fn instant(field: &str, raw: &str) -> Result<String, ApiError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| {
            t.with_timezone(&Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .map_err(|e| ApiError::field(field, format!("`{raw}` is not an RFC 3339 time ({e})")))
}

fn minutes(ms: i64) -> f64 {
    (ms as f64 / 60_000.0 * 100.0).round() / 100.0
}

/// A CSV field, quoted when it needs to be (RFC 4180), and defused against spreadsheet
/// formula injection: titles are user input.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv(group_by: &str, rows: &[AirtimeRow]) -> String {
    let mut out = format!("{group_by},label,minutes,airings,clusters\r\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{:.2},{},{}\r\n",
            csv_field(&r.group_key),
            csv_field(&r.group_label),
            minutes(r.aired_ms),
            r.airings,
            r.clusters
        ));
    }
    out
}

/// Minutes aired in a period, grouped by topic, area or campaign; JSON, or CSV with
/// `Accept: text/csv`.
#[utoipa::path(get, path = "/api/v1/reports/airtime", tag = "reports", security(("bearer" = [])),
    params(AirtimeQuery),
    responses((status = 200, body = Airtime),
              (status = 200, content_type = "text/csv", body = String),
              (status = 422, body = Problem)))]
async fn airtime(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(mut q): Query<AirtimeQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    q.area = principal.list_area(q.area.as_deref())?;
    let from = instant("from", &q.from)?;
    let to = instant("to", &q.to)?;
    if to <= from {
        return Err(ApiError::field("to", "must be after `from`"));
    }
    let group_name = q.group_by.as_deref().unwrap_or("topic");
    let group = match group_name {
        "topic" => AirtimeGroup::Topic,
        "area" => AirtimeGroup::Area,
        "campaign" => AirtimeGroup::Campaign,
        other => {
            return Err(ApiError::field(
                "group_by",
                format!("`{other}` is not one of: topic, area, campaign"),
            ));
        }
    };
    let areas = match &q.area {
        Some(area) => {
            let codes = state.store.area_subtree(std::slice::from_ref(area)).await?;
            if codes.is_empty() {
                return Err(ApiError::field(
                    "area",
                    format!("area `{area}` does not exist"),
                ));
            }
            Some(codes)
        }
        None => None,
    };
    let rows = state
        .store
        .airtime(&from, &to, areas.as_deref(), group)
        .await?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    if wants_csv {
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"airtime.csv\"",
                ),
            ],
            csv(group_name, &rows),
        )
            .into_response());
    }
    let total: i64 = rows.iter().map(|r| r.aired_ms).sum();
    Ok(Json(Airtime {
        from,
        to,
        area: q.area,
        group_by: group_name.into(),
        total_minutes: minutes(total),
        rows: rows
            .into_iter()
            .map(|r| AirtimeEntry {
                minutes: minutes(r.aired_ms),
                key: r.group_key,
                label: r.group_label,
                airings: r.airings,
                clusters: r.clusters,
            })
            .collect(),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_separators_and_defuses_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("Chuyển đổi số"), "Chuyển đổi số");
    }

    #[test]
    fn the_csv_has_a_header_and_one_line_per_group() {
        let rows = [AirtimeRow {
            group_key: "chuyen-doi-so".into(),
            group_label: "chuyen-doi-so".into(),
            aired_ms: 90_000,
            airings: 2,
            clusters: 3,
        }];
        assert_eq!(
            csv("topic", &rows),
            "topic,label,minutes,airings,clusters\r\nchuyen-doi-so,chuyen-doi-so,1.50,2,3\r\n"
        );
    }
}
