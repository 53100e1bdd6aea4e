//! Liveness, readiness and the OpenAPI document: the routes that need no token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_json))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
}

/// The process runs.
#[utoipa::path(get, path = "/healthz", tag = "system",
    responses((status = 200, description = "the process runs", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    store: bool,
    pacer: bool,
}

/// The store answers and the pacer runs.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses((status = 200, description = "ready", body = Readiness),
              (status = 503, description = "not ready", body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let readiness = Readiness {
        store: state.store.ping().await.is_ok(),
        pacer: state.engine.is_running(),
    };
    let status = if readiness.store && readiness.pacer {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}

/// The OpenAPI 3 document of every route, generated from the route definitions.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system",
    responses((status = 200, description = "the OpenAPI 3 document of every route")))]
async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    match state.openapi.get() {
        Some(doc) => Json(doc.as_ref().clone()).into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
