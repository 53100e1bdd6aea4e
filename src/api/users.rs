//! `/api/v1/users`: the admin's user and token management. A token is shown once, in the
//! answer that creates it; only its SHA-256 is kept. Revoking keeps the row (the audit
//! log names its actors).

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::access::{Principal, Role};
use super::areas::validation;
use super::problem::{ApiError, FieldError, JsonBody, Problem};
use crate::fleet::parse_name;
use crate::store::{AuditEntry, Store, StoreError, UserRow, now_rfc3339};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(revoke_user))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    /// `admin`, `operator`, `officer`, `technician` or `agent`.
    pub role: String,
    /// The root of the user's scope (required for every role but admin).
    pub area_code: Option<String>,
    /// Role `agent`: the cluster whose heartbeats the token may send.
    pub cluster_id: Option<String>,
    /// May approve campaigns in its scope.
    pub can_approve: Option<bool>,
    /// RFC 3339; the token stops working then.
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct User {
    id: String,
    name: String,
    role: String,
    area_code: Option<String>,
    cluster_id: Option<String>,
    can_approve: bool,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    /// The bearer token, in the answer that created the user and never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl From<UserRow> for User {
    fn from(u: UserRow) -> Self {
        User {
            id: u.id,
            name: u.name,
            role: u.role,
            area_code: u.area_code,
            cluster_id: u.cluster_id,
            can_approve: u.can_approve,
            created_at: u.created_at,
            expires_at: u.expires_at,
            revoked_at: u.revoked_at,
            token: None,
        }
    }
}

/// Validates `body` and stores the user with a new token; returns it with the token.
/// Shared by the API and `loaxa users add`.
pub async fn add_user(store: &Store, body: CreateUser) -> Result<User, ApiError> {
    let mut errors = Vec::new();
    let name = parse_name(&body.name, 200)
        .map_err(|e| errors.push(FieldError::new("name", e.0)))
        .ok();
    let role = Role::parse(&body.role);
    if role.is_none() {
        errors.push(FieldError::new(
            "role",
            "must be admin, operator, officer, technician or agent",
        ));
    }
    match (&body.area_code, role) {
        (None, Some(r)) if r != Role::Admin => errors.push(FieldError::new(
            "area_code",
            "is required: the root of the area subtree this user acts in",
        )),
        (Some(code), _) => match store.area(code).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => errors.push(FieldError::new(
                "area_code",
                format!("area `{code}` does not exist"),
            )),
            Err(e) => return Err(e.into()),
        },
        _ => {}
    }
    match (&body.cluster_id, role) {
        (None, Some(Role::Agent)) => errors.push(FieldError::new(
            "cluster_id",
            "is required for an agent: the cluster it speaks for",
        )),
        (Some(id), Some(Role::Agent)) => match store.cluster(id).await {
            Ok(c) if body.area_code.as_deref().is_some_and(|a| a != c.area_code) => errors.push(
                FieldError::new("cluster_id", "the cluster is not in the user's area"),
            ),
            Ok(_) => {}
            Err(StoreError::NotFound) => errors.push(FieldError::new(
                "cluster_id",
                format!("cluster `{id}` does not exist"),
            )),
            Err(e) => return Err(e.into()),
        },
        (Some(_), _) => errors.push(FieldError::new("cluster_id", "only for role agent")),
        _ => {}
    }
    if let Some(e) = &body.expires_at
        && chrono::DateTime::parse_from_rfc3339(e).map_or(true, |t| t <= chrono::Utc::now())
    {
        errors.push(FieldError::new(
            "expires_at",
            "must be an RFC 3339 time in the future",
        ));
    }
    let (Some(name), Some(role), true) = (name, role, errors.is_empty()) else {
        return Err(validation(errors));
    };
    let token = hex::encode(rand::random::<[u8; 32]>());
    let row = UserRow {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        role: role.as_str().to_string(),
        area_code: if role == Role::Admin {
            None
        } else {
            body.area_code
        },
        cluster_id: body.cluster_id,
        can_approve: body.can_approve.unwrap_or(false),
        token_hash: hex::encode(super::auth::hash_token(&token)),
        created_at: now_rfc3339(),
        expires_at: body.expires_at,
        revoked_at: None,
    };
    store.insert_user(&row).await?;
    let mut user = User::from(row);
    user.token = Some(token);
    Ok(user)
}

/// Creates a user and its token (shown this once). Admin only.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    request_body = CreateUser,
    responses((status = 201, body = User), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<CreateUser>,
) -> Result<impl IntoResponse, ApiError> {
    let user = add_user(&state.store, body).await?;
    let detail = format!("role {}, area {:?}", user.role, user.area_code);
    state
        .store
        .audit(AuditEntry {
            actor: &principal.actor(),
            action: "user.create",
            target: Some(&user.id),
            detail: Some(&detail),
            result: "ok",
        })
        .await?;
    let location = format!("/api/v1/users/{}", user.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(user),
    ))
}

/// Every user, revoked ones included (never their tokens).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = [User]), (status = 403, body = Problem)))]
async fn list_users(State(state): State<AppState>) -> Result<Json<Vec<User>>, ApiError> {
    Ok(Json(
        state
            .store
            .users()
            .await?
            .into_iter()
            .map(User::from)
            .collect(),
    ))
}

/// Revokes a user's token at once.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn revoke_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let revoked = state
        .store
        .revoke_user(&id, &now_rfc3339())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("user", &id),
            other => other.into(),
        })?;
    state
        .store
        .audit(AuditEntry {
            actor: &principal.actor(),
            action: "user.revoke",
            target: Some(&id),
            detail: None,
            result: if revoked { "ok" } else { "already revoked" },
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
