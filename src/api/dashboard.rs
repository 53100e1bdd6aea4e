//! The web dashboard: one page and its two assets, embedded in the binary (no CDN, no
//! separate server: government intranets), and the calls only it needs: who am I, and
//! the fleet's health transitions as a live event stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::{Extension, Json};
use futures_util::Stream;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::access::{Principal, Scope};

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const STYLE_CSS: &str = include_str!("../dashboard/style.css");

/// The page and its assets (no auth: the page asks for a token itself).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(app_js))
        .routes(routes!(style_css))
}

/// Calls behind the bearer token.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(health_events))
}

/// The dashboard (Vietnamese first, English switch).
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, content_type = "text/html", body = String)))]
async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // Nothing inline, nothing from elsewhere: a script injected into a cluster
            // name could not run.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        INDEX_HTML,
    )
}

#[utoipa::path(get, path = "/assets/app.js", tag = "dashboard",
    responses((status = 200, content_type = "text/javascript", body = String)))]
async fn app_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        APP_JS,
    )
}

#[utoipa::path(get, path = "/assets/style.css", tag = "dashboard",
    responses((status = 200, content_type = "text/css", body = String)))]
async fn style_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE_CSS,
    )
}

/// The caller, as its token names it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    id: String,
    name: String,
    /// `admin`, `operator`, `officer` or `technician`.
    role: super::access::Role,
    /// The root of the caller's scope (`null`: everywhere).
    area_code: Option<String>,
    can_approve: bool,
    /// The site's timezone (IANA name): the dashboard shows times and days in it.
    timezone: String,
}

/// Who the bearer token belongs to: the dashboard shows what this role may do.
#[utoipa::path(get, path = "/api/v1/me", tag = "dashboard", security(("bearer" = [])),
    responses((status = 200, body = Me)))]
async fn me(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Json<Me> {
    Json(Me {
        timezone: state.config.timezone().name().to_string(),
        area_code: match &principal.scope {
            Scope::Global => None,
            Scope::Subtree { root, .. } => Some(root.clone()),
        },
        id: principal.id,
        name: principal.name,
        role: principal.role,
        can_approve: principal.can_approve,
    })
}

/// Health transitions as they happen (`text/event-stream`): `event: transition` with the
/// webhook's JSON, limited to the caller's scope; a comment every 15 s keeps proxies from
/// closing it. A viewer too slow to keep up is told to reload (`event: lagged`).
#[utoipa::path(get, path = "/api/v1/health/events", tag = "health", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", body = String)))]
async fn health_events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = state.monitor.subscribe();
    let stream =
        futures_util::stream::unfold((events, principal), |(mut events, principal)| async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(e) if principal.covers(&e.area_code) => {
                        let data = serde_json::to_string(&e).unwrap_or_default();
                        let event = Event::default().event("transition").data(data);
                        return Some((Ok(event), (events, principal)));
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => {
                        let event = Event::default().event("lagged").data(n.to_string());
                        return Some((Ok(event), (events, principal)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
