//! `/api/v1/audio`: the announcement library. Uploads are decoded and measured before
//! anything is stored; a file that is not audio leaves nothing behind.

use axum::extract::multipart::MultipartError;
use axum::extract::{Multipart, Path, State};
use axum::http::{StatusCode, header};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::access::{Principal, audit};
use super::problem::{ApiError, Problem};
use crate::fleet::parse_name;
use crate::library::{LibraryError, sanitize_extension};
use crate::media::DecodeError;
use crate::store::{AudioRow, StoreError, now_rfc3339};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_audio, list_audio))
        .routes(routes!(get_audio, delete_audio))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Audio {
    id: String,
    title: String,
    topic: Option<String>,
    duration_ms: u64,
    /// The file's own sample rate, in Hz.
    sample_rate: u32,
    /// The file's own channel count (clips air mixed to mono).
    channels: u16,
    /// Container: wav, mp3, flac, ogg, mp4…
    format: String,
    /// Codec inside the container.
    codec: String,
    /// Integrated loudness (EBU R128) as uploaded; airing normalises it.
    loudness_lufs: Option<f64>,
    true_peak_dbtp: Option<f64>,
    original_name: Option<String>,
    size_bytes: u64,
    created_at: String,
}

impl From<AudioRow> for Audio {
    fn from(r: AudioRow) -> Self {
        Audio {
            id: r.id,
            title: r.title,
            topic: r.topic,
            duration_ms: r.duration_ms as u64,
            sample_rate: r.sample_rate as u32,
            channels: r.channels as u16,
            format: r.format,
            codec: r.codec,
            loudness_lufs: r.loudness_lufs.map(round1),
            true_peak_dbtp: r.true_peak_dbtp.map(round1),
            original_name: r.original_name,
            size_bytes: r.size_bytes as u64,
            created_at: r.created_at,
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The multipart form of an upload (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The audio file: WAV, MP3, FLAC, Ogg Vorbis, M4A (AAC)…
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Defaults to the file name.
    title: Option<String>,
    /// What the announcement is about (groups the airtime report).
    topic: Option<String>,
}

fn multipart_error(e: MultipartError, limit_mb: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge { limit_mb }
    } else {
        ApiError::BadRequest(format!(
            "the multipart body is malformed: {}",
            e.body_text()
        ))
    }
}

fn text_field(bytes: Bytes, field: &str) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::field(field, "must be UTF-8 text"))
}

/// Uploads an announcement (multipart field `file`, optional `title` and `topic`).
#[utoipa::path(post, path = "/api/v1/audio", tag = "audio", security(("bearer" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, body = Audio),
              (status = 413, body = Problem, description = "larger than audio.max_upload_mb"),
              (status = 415, body = Problem, description = "not a format we recognise"),
              (status = 422, body = Problem, description = "empty, truncated, corrupt or too long")))]
async fn upload_audio(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Created, ApiError> {
    let limit_mb = state.config.audio.max_upload_mb;
    let mut multipart = multipart.map_err(|e| {
        ApiError::WrongContentType(format!(
            "the body must be multipart/form-data with a `file` field ({})",
            e.body_text()
        ))
    })?;
    let id = uuid::Uuid::new_v4().to_string();
    let upload = state.library.upload_path(&id);
    // Whatever happens below, a refused upload leaves no partial file.
    let result = match read_form(&mut multipart, &upload, limit_mb).await {
        Ok((Some((original_name, size)), title, topic)) => {
            store_upload(
                &state,
                id,
                upload.clone(),
                original_name,
                size,
                title,
                topic,
            )
            .await
        }
        Ok((None, _, _)) => Err(ApiError::field("file", "is required")),
        Err(e) => Err(e),
    };
    match result {
        Ok(created) => {
            let title = created.2.title.clone();
            let id = created.2.id.clone();
            audit(&state, &principal, "audio.upload", Some(&id), Some(&title)).await?;
            Ok(created)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&upload).await;
            Err(e)
        }
    }
}

type Form = (
    Option<(Option<String>, u64)>,
    Option<String>,
    Option<String>,
);
type Created = (StatusCode, [(header::HeaderName, String); 1], Json<Audio>);

/// Reads the multipart form, streaming the file to `upload` chunk by chunk: the size
/// limit applies while the body arrives, and memory stays flat whatever the file size.
async fn read_form(
    multipart: &mut Multipart,
    upload: &std::path::Path,
    limit_mb: u64,
) -> Result<Form, ApiError> {
    use tokio::io::AsyncWriteExt;
    let (mut file, mut title, mut topic) = (None, None, None);
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e, limit_mb))?
    {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" => {
                if file.is_some() {
                    return Err(ApiError::field("file", "only one file per upload"));
                }
                let file_name = field.file_name().map(str::to_string);
                let mut out = tokio::fs::File::create(upload)
                    .await
                    .map_err(ApiError::internal)?;
                let mut size = 0u64;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| multipart_error(e, limit_mb))?
                {
                    size += chunk.len() as u64;
                    out.write_all(&chunk).await.map_err(ApiError::internal)?;
                }
                out.flush().await.map_err(ApiError::internal)?;
                file = Some((file_name, size));
            }
            "title" => {
                let data = field
                    .bytes()
                    .await
                    .map_err(|e| multipart_error(e, limit_mb))?;
                title = Some(text_field(data, "title")?);
            }
            "topic" => {
                let data = field
                    .bytes()
                    .await
                    .map_err(|e| multipart_error(e, limit_mb))?;
                topic = Some(text_field(data, "topic")?);
            }
            other => {
                return Err(ApiError::field(
                    other.to_string(),
                    "unknown field; expected file, title, topic",
                ));
            }
        }
    }
    Ok((file, title, topic))
}

/// Decodes the streamed upload and records it; the row is written only for good audio.
async fn store_upload(
    state: &AppState,
    id: String,
    upload: std::path::PathBuf,
    original_name: Option<String>,
    size_bytes: u64,
    title: Option<String>,
    topic: Option<String>,
) -> Result<Created, ApiError> {
    let title = match title {
        Some(t) => parse_name(&t, 200).map_err(|e| ApiError::field("title", e.0))?,
        None => original_name
            .as_deref()
            .and_then(|n| std::path::Path::new(n).file_stem())
            .and_then(|s| s.to_str())
            .and_then(|s| parse_name(s, 200).ok())
            .unwrap_or_else(|| "untitled".into()),
    };
    let topic = topic
        .filter(|t| !t.trim().is_empty())
        .map(|t| parse_name(&t, 100).map_err(|e| ApiError::field("topic", e.0)))
        .transpose()?;
    let extension = original_name
        .as_deref()
        .and_then(|n| std::path::Path::new(n).extension())
        .and_then(|e| e.to_str())
        .and_then(|e| sanitize_extension(Some(e)));
    let row = ingest_upload(
        state,
        Upload {
            id: id.clone(),
            path: upload,
            extension,
            title,
            topic,
            original_name,
            size_bytes: size_bytes as i64,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/audio/{id}"))],
        Json(Audio::from(row)),
    ))
}

/// A file written to [`crate::library::Library::upload_path`], with what is known of it.
pub(crate) struct Upload {
    pub id: String,
    pub path: std::path::PathBuf,
    pub extension: Option<String>,
    pub title: String,
    pub topic: Option<String>,
    pub original_name: Option<String>,
    pub size_bytes: i64,
}

/// Decodes and measures an upload; if it is good audio it joins the library (file and
/// row), otherwise nothing is left of it and the answer says why.
pub(crate) async fn ingest_upload(state: &AppState, upload: Upload) -> Result<AudioRow, ApiError> {
    let Upload {
        id,
        path: upload,
        extension,
        title,
        topic,
        original_name,
        size_bytes,
    } = upload;
    let ingested = state
        .library
        .ingest(&id, upload, extension)
        .await
        .map_err(|e| match e {
            // Our own upload file failing to open is our fault, not the file's.
            LibraryError::Decode(DecodeError::Io(why)) => ApiError::internal(why),
            LibraryError::Decode(d) => decode_problem(d),
            other => ApiError::internal(other),
        })?;
    let row = AudioRow {
        id: id.clone(),
        title,
        topic,
        original_name: original_name
            .map(|n| n.chars().filter(|c| !c.is_control()).take(255).collect()),
        file_name: ingested.file_name.clone(),
        format: ingested.format,
        codec: ingested.codec,
        sample_rate: i64::from(ingested.sample_rate),
        channels: i64::from(ingested.channels),
        duration_ms: ingested.duration_ms as i64,
        loudness_lufs: ingested.loudness.map(|l| l.integrated_lufs),
        true_peak_dbtp: ingested.loudness.map(|l| l.true_peak_dbtp),
        size_bytes,
        created_at: now_rfc3339(),
    };
    if let Err(e) = state.store.insert_audio(&row).await {
        // The row is the record of truth: without it the file must not linger.
        state.library.remove(&id, &ingested.file_name).await;
        return Err(e.into());
    }
    prepare_for_fleet(state, &row);
    Ok(row)
}

/// Encodes a new clip for every (codec, ptime) the fleet uses, in the background, so that
/// an emergency using it starts at once.
fn prepare_for_fleet(state: &AppState, row: &AudioRow) {
    let state = state.clone();
    let clip = crate::library::ClipRef {
        id: row.id.clone(),
        file_name: row.file_name.clone(),
        loudness: row.loudness_lufs.zip(row.true_peak_dbtp).map(
            |(integrated_lufs, true_peak_dbtp)| crate::media::Loudness {
                integrated_lufs,
                true_peak_dbtp,
            },
        ),
    };
    tokio::spawn(async move {
        let Ok(clusters) = state.store.clusters().await else {
            return;
        };
        let mut formats: Vec<(crate::codec::Codec, u32)> = clusters
            .iter()
            .filter_map(|c| Some((c.codec.parse().ok()?, c.ptime_ms as u32)))
            .collect();
        formats.sort();
        formats.dedup();
        state.library.prepare(&clip, &formats).await;
    });
}

fn decode_problem(e: DecodeError) -> ApiError {
    let detail = format!("the file is not usable audio: {e}");
    let field = "file".to_string();
    match e {
        DecodeError::Unrecognised | DecodeError::UnsupportedCodec(_) => {
            ApiError::WrongContentType(detail)
        }
        _ => ApiError::UnsupportedMedia { detail, field },
    }
}

/// The library.
#[utoipa::path(get, path = "/api/v1/audio", tag = "audio", security(("bearer" = [])),
    responses((status = 200, body = [Audio])))]
async fn list_audio(State(state): State<AppState>) -> Result<Json<Vec<Audio>>, ApiError> {
    Ok(Json(
        state
            .store
            .audio_list()
            .await?
            .into_iter()
            .map(Audio::from)
            .collect(),
    ))
}

/// One announcement.
#[utoipa::path(get, path = "/api/v1/audio/{id}", tag = "audio", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Audio), (status = 404, body = Problem)))]
async fn get_audio(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Audio>, ApiError> {
    state
        .store
        .audio(&id)
        .await
        .map(|r| Json(r.into()))
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("audio", &id),
            other => other.into(),
        })
}

/// Removes an announcement that nothing is airing.
#[utoipa::path(delete, path = "/api/v1/audio/{id}", tag = "audio", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_audio(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let row = state.store.audio(&id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("audio", &id),
        other => other.into(),
    })?;
    if id == state.config.emergency.fallback_audio_id {
        return Err(ApiError::Conflict(format!(
            "audio `{id}` is the emergency fallback (emergency.fallback_audio_id)"
        )));
    }
    if state.store.audio_in_use(&id).await? {
        return Err(ApiError::Conflict(format!(
            "audio `{id}` is part of a campaign or of a broadcast that is queued or airing"
        )));
    }
    state.store.delete_audio(&id).await?;
    state.library.remove(&id, &row.file_name).await;
    audit(
        &state,
        &principal,
        "audio.delete",
        Some(&id),
        Some(&row.title),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
