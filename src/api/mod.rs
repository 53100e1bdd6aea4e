//! The HTTP API: one router per resource, bearer auth on `/api/`, problem+json errors,
//! and the OpenAPI document generated from the same route definitions so it cannot drift.

pub mod access;
pub(crate) mod airing;
pub mod areas;
pub mod audio;
pub mod audit;
pub mod auth;
pub mod broadcasts;
pub mod campaigns;
pub mod clusters;
pub mod dashboard;
pub mod emergency;
pub mod health;
pub mod metrics;
pub mod preview;
pub mod problem;
pub mod reports;
pub mod system;
pub mod users;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use auth::BearerSecurity;

use crate::config::Config;
use crate::library::Library;
use crate::playout::Engine;
use crate::store::Store;

/// JSON bodies are small; uploads get their own, configured limit.
const JSON_BODY_LIMIT: usize = 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub engine: Arc<Engine>,
    pub library: Arc<Library>,
    pub config: Arc<Config>,
    /// SHA-256 of the bootstrap admin token.
    pub admin_token_hash: [u8; 32],
    /// HTTP request counts and latencies, for `/metrics`.
    pub http_metrics: Arc<metrics::HttpMetrics>,
    /// Failed authentications per client address.
    pub auth_limiter: Arc<access::AuthLimiter>,
    /// The fleet's health, and what agents said and are owed.
    pub monitor: Arc<crate::monitor::Monitor>,
    /// The live relays airing now.
    pub relays: Arc<crate::relay::Relays>,
    /// Wakes the calendar runner when campaigns change.
    pub calendar: Arc<tokio::sync::Notify>,
    /// The document generated from the routes, set once when the app is built.
    pub openapi: Arc<OnceLock<Arc<utoipa::openapi::OpenApi>>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "loaxa",
        description = "Smart IP-radio broadcast controller for commune loudspeaker clusters"
    ),
    modifiers(&BearerSecurity),
    components(schemas(problem::Problem, problem::FieldError))
)]
struct ApiDoc;

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let (router, openapi) = routes(&state).split_for_parts();
    let _ = state.openapi.set(Arc::new(openapi));
    router
        .layer(axum::middleware::from_fn(deadline))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Longest a request may take, body included; an upload gets longer (200 MB over a slow
/// commune link).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
pub const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);

/// Ends a request that outlives its time with a 408 problem (a slow or stalled client
/// holds nothing for long). What a handler had not committed is rolled back with it.
async fn deadline(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let upload = req.method() == axum::http::Method::POST && req.uri().path() == "/api/v1/audio";
    let limit = if upload {
        UPLOAD_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => problem::problem_response(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "urn:loaxa:problem:timeout".into(),
            format!("the request took longer than {} s", limit.as_secs()),
            Vec::new(),
        ),
    }
}

/// Every route with its OpenAPI description (also used to print the document).
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let upload_limit = (state.config.audio.max_upload_mb as usize).saturating_mul(1024 * 1024);
    let protected = OpenApiRouter::new()
        .merge(areas::router())
        .merge(clusters::router())
        .merge(broadcasts::router())
        .merge(campaigns::router())
        .merge(preview::router())
        .merge(reports::router())
        .merge(audit::router())
        .merge(health::router())
        .merge(dashboard::api_router())
        .merge(users::router())
        .merge(metrics::router())
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .merge(audio::router().layer(DefaultBodyLimit::max(upload_limit)))
        .merge(emergency::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ));
    // Agents authenticate with their own cluster's token, checked by the route itself.
    let agents = health::agent_router().layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(system::router())
        .merge(dashboard::router())
        .merge(agents)
        .merge(protected)
}

/// The OpenAPI document, for `loaxa openapi` and tests.
pub fn openapi_document(state: &AppState) -> utoipa::openapi::OpenApi {
    routes(state).split_for_parts().1
}
