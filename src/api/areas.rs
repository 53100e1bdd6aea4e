//! `/api/v1/areas`: the administrative tree (province, commune, hamlet…) clusters hang on.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::access::{Principal, audit};
use super::problem::{ApiError, FieldError, JsonBody, Problem};
use crate::fleet::{AreaCode, parse_name};
use crate::store::{AreaRow, StoreError, now_rfc3339};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_area, list_areas))
        .routes(routes!(get_area))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateArea {
    /// Lowercase a-z, 0-9, `-`, `_`, `.`; at most 64 characters.
    code: String,
    name: String,
    /// A label: province, district, commune, hamlet…
    kind: String,
    parent_code: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Area {
    code: String,
    name: String,
    kind: String,
    parent_code: Option<String>,
    created_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AreaDetail {
    #[serde(flatten)]
    area: Area,
    /// Codes of the areas directly below this one.
    children: Vec<String>,
}

impl From<AreaRow> for Area {
    fn from(r: AreaRow) -> Self {
        Area {
            code: r.code,
            name: r.name,
            kind: r.kind,
            parent_code: r.parent_code,
            created_at: r.created_at,
        }
    }
}

/// Creates an area, optionally below a parent.
#[utoipa::path(post, path = "/api/v1/areas", tag = "areas", security(("bearer" = [])),
    request_body = CreateArea,
    responses((status = 201, body = Area), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_area(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<CreateArea>,
) -> Result<impl IntoResponse, ApiError> {
    let mut errors = Vec::new();
    let mut check = |field: &str, r: Result<String, crate::fleet::Invalid>| match r {
        Ok(v) => v,
        Err(e) => {
            errors.push(FieldError {
                field: field.into(),
                message: e.0,
            });
            String::new()
        }
    };
    let code = check("code", AreaCode::parse(&body.code).map(|c| c.to_string()));
    let name = check("name", parse_name(&body.name, 200));
    let kind = check("kind", parse_name(&body.kind, 40));
    let parent_code = body
        .parent_code
        .as_deref()
        .map(|p| check("parent_code", AreaCode::parse(p).map(|c| c.to_string())));
    if !errors.is_empty() {
        return Err(validation(errors));
    }
    if let Some(parent) = &parent_code {
        match state.store.area(parent).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => {
                return Err(ApiError::field(
                    "parent_code",
                    format!("area `{parent}` does not exist"),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let row = AreaRow {
        code: code.clone(),
        name,
        kind,
        parent_code,
        created_at: now_rfc3339(),
    };
    state.store.insert_area(&row).await.map_err(|e| match e {
        StoreError::Conflict(_) => ApiError::Conflict(format!("area `{code}` already exists")),
        other => other.into(),
    })?;
    audit(&state, &principal, "area.create", Some(&code), None).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/areas/{code}"))],
        Json(Area::from(row)),
    ))
}

pub(crate) fn validation(errors: Vec<FieldError>) -> ApiError {
    let detail = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    ApiError::Validation { detail, errors }
}

/// Every area, each with its parent: the tree as a flat list.
#[utoipa::path(get, path = "/api/v1/areas", tag = "areas", security(("bearer" = [])),
    responses((status = 200, body = [Area])))]
async fn list_areas(State(state): State<AppState>) -> Result<Json<Vec<Area>>, ApiError> {
    Ok(Json(
        state
            .store
            .areas()
            .await?
            .into_iter()
            .map(Area::from)
            .collect(),
    ))
}

/// One area and the codes of its children.
#[utoipa::path(get, path = "/api/v1/areas/{code}", tag = "areas", security(("bearer" = [])),
    params(("code" = String, Path)),
    responses((status = 200, body = AreaDetail), (status = 404, body = Problem)))]
async fn get_area(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Json<AreaDetail>, ApiError> {
    let row = state.store.area(&code).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("area", &code),
        other => other.into(),
    })?;
    let children = state
        .store
        .areas()
        .await?
        .into_iter()
        .filter(|a| a.parent_code.as_deref() == Some(code.as_str()))
        .map(|a| a.code)
        .collect();
    Ok(Json(AreaDetail {
        area: row.into(),
        children,
    }))
}
