//! Errors as RFC 9457 `application/problem+json`, and the request extractors whose
//! rejections are the same type, so every malformed request gets the same kind of answer.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::StoreError;

/// One field of a request that failed validation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, as a JSON path (`endpoint.address`) or form field name.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The problem document (RFC 9457).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Everything an API handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No bearer token, or one that is not valid.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// A valid token whose role or area scope does not cover this request.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed authentications from this address; retry after the seconds given.
    #[error("too many failed authentications from this address; retry in {0} s")]
    TooManyRequests(u64),
    /// The named resource does not exist.
    #[error("{what} `{id}` does not exist")]
    NotFound { what: &'static str, id: String },
    /// The body is not syntactically valid (JSON that does not parse, a broken multipart).
    #[error("{0}")]
    BadRequest(String),
    /// The body parses but some fields are not acceptable.
    #[error("{detail}")]
    Validation {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// The upload is not audio we can decode.
    #[error("{detail}")]
    UnsupportedMedia { detail: String, field: String },
    /// The body is larger than allowed.
    #[error("the request body is larger than the {limit_mb} MB allowed")]
    TooLarge { limit_mb: u64 },
    /// The Content-Type is not one the route accepts.
    #[error("{0}")]
    WrongContentType(String),
    /// The request conflicts with the current state (a duplicate code, a resource in use).
    #[error("{0}")]
    Conflict(String),
    /// Something broke on our side; logged, never detailed to the client.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        let field = field.into();
        ApiError::Validation {
            detail: format!("{field}: {message}"),
            errors: vec![FieldError { field, message }],
        }
    }

    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound {
            what,
            id: id.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMedia { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::WrongContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::TooManyRequests(_) => "too-many-requests",
            ApiError::NotFound { .. } => "not-found",
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Validation { .. } => "validation",
            ApiError::UnsupportedMedia { .. } => "unsupported-media",
            ApiError::TooLarge { .. } => "too-large",
            ApiError::WrongContentType(_) => "wrong-content-type",
            ApiError::Conflict(_) => "conflict",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::Conflict(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let kind = format!("urn:loaxa:problem:{}", self.kind());
        let detail = if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "internal error answering a request");
            "an internal error occurred; it has been logged".to_string()
        } else {
            self.to_string()
        };
        let retry_after = match self {
            ApiError::TooManyRequests(s) => Some(s),
            _ => None,
        };
        let errors = match self {
            ApiError::Validation { errors, .. } => errors,
            ApiError::UnsupportedMedia { field, detail } => vec![FieldError {
                field,
                message: detail,
            }],
            _ => Vec::new(),
        };
        let mut response = problem_response(status, kind, detail, errors);
        if let Some(s) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"loaxa\""),
            );
        }
        response
    }
}

/// Builds a problem+json response.
pub fn problem_response(
    status: StatusCode,
    kind: String,
    detail: String,
    errors: Vec<FieldError>,
) -> Response {
    let body = Problem {
        kind,
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail,
        errors,
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The field a serde error is about: its JSON path, plus the key named in "missing
/// field `x`" / "unknown field `x`" messages, which serde reports on the parent.
fn field_of(path: &str, message: &str) -> String {
    let parent = if path == "." { "" } else { path };
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match named {
        // For unknown keys the path already ends in the key.
        Some(key) if parent == key || parent.ends_with(&format!(".{key}")) => parent.to_string(),
        Some(key) if parent.is_empty() => key.to_string(),
        Some(key) => format!("{parent}.{key}"),
        None => parent.to_string(),
    }
}

/// Like `axum::Json`, but a body that does not parse is a problem+json naming the field
/// (via the JSON path of the serde error), and a body over the limit is a 413.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::WrongContentType(
                "the body must be JSON (Content-Type: application/json)".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge { limit_mb: 1 }
                } else {
                    ApiError::BadRequest(format!("could not read the body: {e}"))
                }
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Like `axum::extract::Query`, but a query string that does not parse (an unknown
/// parameter, a number that is not one) is a problem+json 400, as every other bad input.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Parses a JSON body into `T`, with the same problem answers as [`JsonBody`].
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        // Nothing but whitespace may follow the value.
        Ok(value) => match de.end() {
            Ok(()) => Ok(value),
            Err(e) => Err(ApiError::BadRequest(format!(
                "the body is not valid JSON: {e}"
            ))),
        },
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(ApiError::BadRequest(format!(
                    "the body is not valid JSON: {inner}"
                )))
            } else {
                let message = inner.to_string();
                let field = field_of(&path, &message);
                Err(ApiError::Validation {
                    detail: if field.is_empty() {
                        message.clone()
                    } else {
                        format!("{field}: {message}")
                    },
                    errors: vec![FieldError { field, message }],
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn missing_and_unknown_keys_are_named_with_their_parent() {
        assert_eq!(field_of(".", "missing field `code`"), "code");
        assert_eq!(
            field_of("endpoint", "missing field `mode`"),
            "endpoint.mode"
        );
        assert_eq!(
            field_of("colour", "unknown field `colour`, expected one of `code`"),
            "colour"
        );
        assert_eq!(
            field_of("endpoint.port", "unknown field `port`, expected `mode`"),
            "endpoint.port"
        );
        assert_eq!(field_of("name", "invalid type: integer `7`"), "name");
    }
}

#[cfg(test)]
mod json_tests {
    use super::*;

    #[test]
    fn junk_after_the_json_value_is_a_bad_request() {
        for body in [&b"{\"a\":1} {"[..], b"{} garbage", b"1 2", b"[]]"] {
            assert!(
                matches!(
                    parse_json::<serde_json::Value>(body),
                    Err(ApiError::BadRequest(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(parse_json::<serde_json::Value>(b" {\"a\": 1} \n").is_ok());
    }
}
