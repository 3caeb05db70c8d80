//! `GET /v1/recordings/{id}`: the file, whole or one byte range (`Range: bytes=…`
//! → 206 with `Content-Range`; past the end → 416).
//!
//! Who may read: the operator (`admin` scope) every recording; a user's token with
//! `recordings:read` only the recordings of its own calls. Someone else's recording
//! answers 404 exactly like a missing one, so ids cannot be probed.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::principal;
use super::range::{RangeOutcome, parse_range};
use crate::api::problem::Problem;
use crate::auth::Scope;
use crate::server::Gateway;

/// Streams a recording.
pub async fn download(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let reader = principal(&gateway, &headers, Scope::RecordingsRead)?;
    let not_found = || Problem::not_found(format!("no recording `{id}`"));
    let recording = gateway
        .events
        .store()
        .recording(&id)
        .await
        .map_err(Problem::internal)?
        .ok_or_else(not_found)?;
    if !reader.may_see(recording.user.as_deref()) {
        tracing::info!(recording = %id, by = %reader.identity().user, "recording of another user's call refused (answered 404)");
        return Err(not_found());
    }
    let mut file = match tokio::fs::File::open(&recording.path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Problem::not_found(format!(
                "recording `{id}` is listed but its file is gone"
            )));
        }
        Err(e) => return Err(Problem::internal(format!("{}: {e}", recording.path))),
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| Problem::internal(format!("{}: {e}", recording.path)))?
        .len();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, count) = match parse_range(range, len) {
        RangeOutcome::Full => (StatusCode::OK, 0, len),
        RangeOutcome::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeOutcome::Unsatisfiable => {
            return Err(Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                format!("the recording has {len} bytes; ask for a range inside it"),
            )
            .with_header(header::CONTENT_RANGE, &format!("bytes */{len}")));
        }
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| Problem::internal(format!("{}: {e}", recording.path)))?;
    }
    tracing::info!(recording = %id, by = %reader.identity().user, operator = matches!(reader, super::Principal::Operator(_)), start, count, "recording download");
    let mut response = Response::new(Body::from_stream(ReaderStream::new(file.take(count))));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if let Ok(v) = HeaderValue::from_str(&recording.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(response)
}
