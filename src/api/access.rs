//! Who may do what, where. Every `/api/` request carries a bearer token; it names a
//! principal (the bootstrap admin, or a user with a role, an area scope and perhaps the
//! approve right). Roles are checked here, once, against [`POLICY`] (method and route
//! template → the roles allowed; anything not listed is the admin's alone). Area scope
//! is checked by the handlers, which know which area a resource belongs to, through
//! [`Principal::require_area`] and friends. Failed authentications are limited per
//! client address.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::{hash_token, presented_token, same};
use super::problem::ApiError;
use crate::store::StoreError;

/// What a user is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, everywhere.
    Admin,
    /// District or province: emergencies, broadcasts and campaigns in its subtree.
    Operator,
    /// Commune: announcements, campaigns and broadcasts in its subtree; never emergencies.
    Officer,
    /// Fleet and health in its subtree: clusters, test tones, volume.
    Technician,
    /// One cluster's agent: its heartbeats only.
    Agent,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Operator,
        Role::Officer,
        Role::Technician,
        Role::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Officer => "officer",
            Role::Technician => "technician",
            Role::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

use Role::{Admin as A, Officer as OF, Operator as OP, Technician as T};

/// Every role-checked route: (method, route template, roles allowed). The admin may do
/// everything; a route missing here is the admin's alone (fail closed). Agents appear
/// nowhere: their heartbeat route authenticates them itself.
pub const POLICY: &[(&str, &str, &[Role])] = &[
    ("GET", "/api/v1/areas", &[A, OP, OF, T]),
    ("GET", "/api/v1/areas/{code}", &[A, OP, OF, T]),
    ("POST", "/api/v1/areas", &[A]),
    ("GET", "/api/v1/clusters", &[A, OP, OF, T]),
    ("POST", "/api/v1/clusters", &[A, T]),
    ("GET", "/api/v1/clusters/{id}", &[A, OP, OF, T]),
    ("PATCH", "/api/v1/clusters/{id}", &[A, T]),
    ("DELETE", "/api/v1/clusters/{id}", &[A, T]),
    ("GET", "/api/v1/clusters/{id}/sdp", &[A, OP, OF, T]),
    ("GET", "/api/v1/clusters/{id}/health", &[A, OP, OF, T]),
    (
        "GET",
        "/api/v1/clusters/{id}/health/history",
        &[A, OP, OF, T],
    ),
    ("POST", "/api/v1/clusters/{id}/test-tone", &[A, T]),
    ("GET", "/api/v1/health", &[A, OP, OF, T]),
    ("GET", "/api/v1/health/transitions", &[A, OP, OF, T]),
    ("GET", "/api/v1/audio", &[A, OP, OF]),
    ("POST", "/api/v1/audio", &[A, OP, OF]),
    ("GET", "/api/v1/audio/{id}", &[A, OP, OF]),
    ("DELETE", "/api/v1/audio/{id}", &[A, OP]),
    ("GET", "/api/v1/broadcasts", &[A, OP, OF]),
    ("POST", "/api/v1/broadcasts", &[A, OP, OF]),
    ("GET", "/api/v1/broadcasts/{id}", &[A, OP, OF]),
    ("POST", "/api/v1/broadcasts/{id}/cancel", &[A, OP, OF]),
    ("GET", "/api/v1/campaigns", &[A, OP, OF]),
    ("POST", "/api/v1/campaigns", &[A, OP, OF]),
    ("GET", "/api/v1/campaigns/{id}", &[A, OP, OF]),
    ("PATCH", "/api/v1/campaigns/{id}", &[A, OP, OF]),
    ("DELETE", "/api/v1/campaigns/{id}", &[A, OP, OF]),
    ("POST", "/api/v1/campaigns/{id}/approve", &[A, OP, OF]),
    ("GET", "/api/v1/campaigns/{id}/occurrences", &[A, OP, OF]),
    ("POST", "/api/v1/schedule/preview", &[A, OP, OF]),
    ("GET", "/api/v1/emergency", &[A, OP]),
    ("POST", "/api/v1/emergency", &[A, OP]),
    ("GET", "/api/v1/emergency/{id}", &[A, OP]),
    ("POST", "/api/v1/emergency/{id}/cancel", &[A, OP]),
    ("GET", "/api/v1/reports/airtime", &[A, OP, OF]),
    ("GET", "/metrics", &[A, T]),
    ("GET", "/api/v1/me", &[A, OP, OF, T]),
    ("GET", "/api/v1/health/events", &[A, OP, OF, T]),
];

/// The roles allowed on `method` `template` (the admin alone when it is not listed).
pub fn allowed_roles(method: &str, template: &str) -> &'static [Role] {
    POLICY
        .iter()
        .find(|(m, p, _)| *m == method && *p == template)
        .map_or(&[A], |(_, _, roles)| roles)
}

/// Where a principal may act.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// Every area (the admin).
    Global,
    /// The subtree of `root`: these area codes.
    Subtree {
        root: String,
        areas: HashSet<String>,
    },
}

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user id, or `admin` for the bootstrap token.
    pub id: String,
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    pub can_approve: bool,
}

impl Principal {
    fn bootstrap_admin() -> Self {
        Principal {
            id: "admin".into(),
            name: "admin".into(),
            role: Role::Admin,
            scope: Scope::Global,
            can_approve: true,
        }
    }

    /// How the audit log names this principal.
    pub fn actor(&self) -> String {
        if self.id == "admin" {
            "admin".into()
        } else {
            format!("user:{} ({})", self.name, self.id)
        }
    }

    pub fn covers(&self, area: &str) -> bool {
        match &self.scope {
            Scope::Global => true,
            Scope::Subtree { areas, .. } => areas.contains(area),
        }
    }

    /// 403 unless `area` is in this principal's scope.
    pub fn require_area(&self, area: &str) -> Result<(), ApiError> {
        if self.covers(area) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "area `{area}` is outside your scope"
            )))
        }
    }

    /// 403 unless every one of `areas` is in scope.
    pub fn require_areas<'a>(
        &self,
        areas: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ApiError> {
        areas.into_iter().try_for_each(|a| self.require_area(a))
    }

    /// The area a list should be limited to: the one asked for (if in scope), else the
    /// root of the principal's scope (`None` for a global principal who asked for none).
    pub fn list_area(&self, asked: Option<&str>) -> Result<Option<String>, ApiError> {
        match (asked, &self.scope) {
            (Some(a), _) => {
                self.require_area(a)?;
                Ok(Some(a.to_string()))
            }
            (None, Scope::Global) => Ok(None),
            (None, Scope::Subtree { root, .. }) => Ok(Some(root.clone())),
        }
    }

    /// 403 unless this principal has one of `roles`.
    pub fn require_role(&self, roles: &[Role], what: &str) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "a {} may not {what}",
                self.role.as_str()
            )))
        }
    }
}

/// Failed authentications allowed per client address per window, by default
/// (`[server] max_auth_failures_per_minute`).
pub const MAX_AUTH_FAILURES: u32 = 20;
/// The window: after too many failures, an address waits out the rest of it.
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (the oldest windows are dropped first).
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Failed authentications per client address.
pub struct AuthLimiter {
    /// 0: no limit.
    max: u32,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Default for AuthLimiter {
    fn default() -> Self {
        Self::new(MAX_AUTH_FAILURES)
    }
}

impl AuthLimiter {
    pub fn new(max_per_window: u32) -> Self {
        Self {
            max: max_per_window,
            failures: Mutex::default(),
        }
    }

    /// `Err(seconds to wait)` if `ip` is over its limit now.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip) {
            Some(&(start, n)) if self.max > 0 && n >= self.max => {
                let left = AUTH_FAILURE_WINDOW.saturating_sub(now.saturating_duration_since(start));
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(left.as_secs().max(1))
                }
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, (start, _)| now.saturating_duration_since(*start) < AUTH_FAILURE_WINDOW);
            // Still full: the oldest window goes, so a flood of addresses cannot switch
            // the limit off for the others.
            if map.len() >= MAX_TRACKED_ADDRESSES
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(ip, _)| *ip)
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= AUTH_FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

fn client_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Resolves the bearer token to a principal (401 if none), checks the route's roles
/// (403), and hands the principal to the handler as a request extension.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let ip = client_ip(&req);
    let now = Instant::now();
    // A valid token always passes: the limit slows guessing, it must not lock out the
    // users and agents who share an address (carrier NAT) with someone who guesses.
    let principal = match resolve(&state, presented_token(req.headers())).await {
        Ok(p) => p,
        Err(ApiError::Unauthorized) => {
            if let Some(ip) = ip {
                if let Err(wait) = state.auth_limiter.check(ip, now) {
                    return ApiError::TooManyRequests(wait).into_response();
                }
                state.auth_limiter.failed(ip, now);
            }
            return ApiError::Unauthorized.into_response();
        }
        Err(e) => return e.into_response(),
    };
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let method = req.method().clone();
    let roles = allowed_roles(method.as_str(), &template);
    if principal.role != Role::Admin && !roles.contains(&principal.role) {
        return ApiError::Forbidden(format!(
            "a {} may not {} {template}",
            principal.role.as_str(),
            if method == Method::GET {
                "read"
            } else {
                "call"
            }
        ))
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// The principal a token names: the bootstrap admin, or a current (not revoked, not
/// expired) user.
async fn resolve(state: &AppState, token: Option<&str>) -> Result<Principal, ApiError> {
    let token = token.ok_or(ApiError::Unauthorized)?;
    let hash = hash_token(token);
    if same(&hash, &state.admin_token_hash) {
        return Ok(Principal::bootstrap_admin());
    }
    let user = match state.store.user_by_token(&hex::encode(hash)).await {
        Ok(u) => u,
        Err(StoreError::NotFound) => return Err(ApiError::Unauthorized),
        Err(e) => return Err(e.into()),
    };
    if user.revoked_at.is_some() || expired(user.expires_at.as_deref()) {
        return Err(ApiError::Unauthorized);
    }
    let role = Role::parse(&user.role).ok_or(ApiError::Unauthorized)?;
    let scope = match (&user.area_code, role) {
        (_, Role::Admin) => Scope::Global,
        // A scoped role without an area acts nowhere (fail closed).
        (None, _) => return Err(ApiError::Unauthorized),
        (Some(root), _) => Scope::Subtree {
            root: root.clone(),
            areas: state
                .store
                .area_subtree(std::slice::from_ref(root))
                .await?
                .into_iter()
                .collect(),
        },
    };
    Ok(Principal {
        id: user.id,
        name: user.name,
        role,
        scope,
        can_approve: user.can_approve || role == Role::Admin,
    })
}

/// True when an RFC 3339 expiry is in the past (an unreadable one counts as expired).
pub fn expired(expires_at: Option<&str>) -> bool {
    expires_at.is_some_and(|e| {
        chrono::DateTime::parse_from_rfc3339(e).map_or(true, |t| t <= chrono::Utc::now())
    })
}

/// Records a failed authentication by a route that checks its own tokens (heartbeats)
/// and returns what to answer: 401, or 429 once the address is over its limit.
pub fn note_failure(state: &AppState, ip: Option<IpAddr>) -> ApiError {
    let now = Instant::now();
    if let Some(ip) = ip {
        if let Err(wait) = state.auth_limiter.check(ip, now) {
            return ApiError::TooManyRequests(wait);
        }
        state.auth_limiter.failed(ip, now);
    }
    ApiError::Unauthorized
}

/// 403 unless every area `targets` names, and the area of every existing cluster it
/// names, lies in `principal`'s scope (unknown ones are left to validation).
pub async fn require_targets(
    state: &AppState,
    principal: &Principal,
    targets: &super::broadcasts::Targets,
) -> Result<(), ApiError> {
    if principal.scope == Scope::Global {
        return Ok(());
    }
    principal.require_areas(targets.areas.iter().map(String::as_str))?;
    for id in &targets.clusters {
        match state.store.cluster(id).await {
            Ok(c) => principal.require_area(&c.area_code)?,
            // A cluster that is gone cannot be placed in the scope: fail closed.
            Err(StoreError::NotFound) => {
                return Err(ApiError::Forbidden(format!(
                    "cluster `{id}` is not in your scope"
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// 403 unless every cluster broadcast `id` went to lies in scope.
pub async fn require_broadcast(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<(), ApiError> {
    if principal.scope == Scope::Global {
        return Ok(());
    }
    let runs = state.store.broadcast_clusters(id).await?;
    // Nothing to place it by (an airing recorded with no cluster): the admin's alone.
    if runs.is_empty() {
        return Err(ApiError::Forbidden(
            "this broadcast reached no cluster: only an admin may see it".into(),
        ));
    }
    principal.require_areas(runs.iter().map(|r| r.area_code.as_str()))
}

/// Appends an audit entry for what `principal` just did.
pub async fn audit(
    state: &AppState,
    principal: &Principal,
    action: &str,
    target: Option<&str>,
    detail: Option<&str>,
) -> Result<(), ApiError> {
    state
        .store
        .audit(crate::store::AuditEntry {
            actor: &principal.actor(),
            action,
            target,
            detail,
            result: "ok",
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_routes_are_the_admins_alone() {
        assert_eq!(allowed_roles("GET", "/api/v1/users"), &[Role::Admin]);
        assert_eq!(allowed_roles("GET", "/api/v1/audit"), &[Role::Admin]);
        assert!(!allowed_roles("POST", "/api/v1/emergency").contains(&Role::Officer));
    }

    #[test]
    fn the_limiter_blocks_after_too_many_failures_and_forgives_after_the_window() {
        let limiter = AuthLimiter::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t0 = Instant::now();
        for _ in 0..MAX_AUTH_FAILURES {
            assert!(limiter.check(ip, t0).is_ok());
            limiter.failed(ip, t0);
        }
        assert!(limiter.check(ip, t0).is_err());
        assert!(limiter.check([10, 0, 0, 2].into(), t0).is_ok());
        assert!(limiter.check(ip, t0 + AUTH_FAILURE_WINDOW).is_ok());
    }

    #[test]
    fn scope_covers_only_the_subtree() {
        let p = Principal {
            id: "u".into(),
            name: "n".into(),
            role: Role::Officer,
            scope: Scope::Subtree {
                root: "xa".into(),
                areas: ["xa".to_string(), "thon".to_string()].into(),
            },
            can_approve: false,
        };
        assert!(p.require_area("thon").is_ok());
        assert!(p.require_area("huyen").is_err());
        assert_eq!(p.list_area(None).unwrap().as_deref(), Some("xa"));
        assert!(p.list_area(Some("huyen")).is_err());
    }
}
