//! `/api/v1/audit`: the append-only record of every action that changed what airs or who
//! can act, with who, when, what, target and result.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::problem::Query;
use super::problem::{ApiError, Problem};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit_log))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct AuditFilter {
    /// RFC 3339, inclusive.
    from: Option<String>,
    /// RFC 3339, exclusive.
    to: Option<String>,
    /// Only this actor (e.g. `admin`, `cap:SENDER`).
    actor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntryView {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    target: Option<String>,
    detail: Option<String>,
    result: String,
}

fn instant(field: &str, raw: Option<&str>) -> Result<Option<String>, ApiError> {
    raw.map(|v| {
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            })
            .map_err(|e| ApiError::field(field, format!("`{v}` is not an RFC 3339 time ({e})")))
    })
    .transpose()
}

/// The audit log, oldest first (at most 1000 entries).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = [])),
    params(AuditFilter),
    responses((status = 200, body = [AuditEntryView]), (status = 422, body = Problem)))]
async fn audit_log(
    State(state): State<AppState>,
    Query(filter): Query<AuditFilter>,
) -> Result<Json<Vec<AuditEntryView>>, ApiError> {
    let from = instant("from", filter.from.as_deref())?;
    let to = instant("to", filter.to.as_deref())?;
    let rows = state
        .store
        .audit_log(from.as_deref(), to.as_deref(), filter.actor.as_deref())
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditEntryView {
                seq: r.seq,
                at: r.at,
                actor: r.actor,
                action: r.action,
                target: r.target,
                detail: r.detail,
                result: r.result,
            })
            .collect(),
    ))
}
