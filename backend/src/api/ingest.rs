//! `POST /v1/events` (waggle batches, or JSON for hand testing) and `POST /api/v1/write`
//! (Prometheus remote write 1.0). Bad input is refused whole with a message naming the
//! problem; nothing already stored is touched. Bodies are read only once memory is granted
//! for them ([`Gate`]), within `--body-read-timeout`, and decoded off the async workers.

mod headers;
mod json;

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{ApiError, ErrorType};
use super::{now_ms, Shared};
use crate::db::DbError;
use crate::self_metrics::Reject;

pub use crate::prompb::{
    Label as RwLabel, Sample as RwSample, TimeSeries as RwTimeSeries, WriteRequest,
};

/// Remote-write requests decompressed and decoded at once: each may hold its decoded body
/// (up to 8 × `--max-body-bytes`) until applied.
const DECODE_SLOTS: usize = 2;

/// What ingest may hold in memory at once, and the counters of what it turned away.
pub struct Gate {
    /// Bytes of request bodies being read, decoded or applied.
    bytes: Arc<Semaphore>,
    budget: usize,
    decodes: Arc<Semaphore>,
    /// Events not counted in a family because the series limit refused its series.
    refused_by_family: Vec<(String, AtomicU64)>,
    last_limit_log: parking_lot::Mutex<Option<Instant>>,
}

impl Gate {
    pub fn new(settings: &crate::config::Settings) -> Self {
        // Room for 32 of the largest bodies, or many thousands of ordinary sidecar batches.
        let budget = settings
            .max_body_bytes
            .saturating_mul(32)
            .min(u32::MAX as usize);
        Self {
            bytes: Arc::new(Semaphore::new(budget)),
            budget,
            decodes: Arc::new(Semaphore::new(DECODE_SLOTS)),
            refused_by_family: settings
                .families
                .iter()
                .map(|f| (f.name.clone(), AtomicU64::new(0)))
                .collect(),
            last_limit_log: parking_lot::Mutex::new(None),
        }
    }

    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(out, "# HELP waggle_events_not_counted_total Events not counted in a family because the series limit refused its series.\n# TYPE waggle_events_not_counted_total counter\n");
        // A name can be two families (Istio's and Kuma's variant): one series per name.
        for (i, (family, _)) in self.refused_by_family.iter().enumerate() {
            if self.refused_by_family[..i].iter().any(|(f, _)| f == family) {
                continue;
            }
            let n: u64 = self.refused_by_family[i..]
                .iter()
                .filter(|(f, _)| f == family)
                .map(|(_, n)| n.load(Relaxed))
                .sum();
            let _ = writeln!(
                out,
                "waggle_events_not_counted_total{{family={}}} {}",
                super::json::string(family),
                n
            );
        }
        let _ = write!(
            out,
            "# HELP waggle_ingest_bytes_in_flight Bytes of ingest bodies held in memory.\n# TYPE waggle_ingest_bytes_in_flight gauge\nwaggle_ingest_bytes_in_flight {}\n",
            self.budget.saturating_sub(self.bytes.available_permits())
        );
    }

    /// Logs the series limit at most once every 10 s, with what it cost since.
    fn log_limit(&self, limit: usize, refused_series: u64, not_counted: u64) {
        let mut last = self.last_limit_log.lock();
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            limit,
            refused_series,
            events_not_counted = not_counted,
            "Series limit reached: new series are refused and their events are not counted in those families (see waggle_events_not_counted_total; raise --max-series)."
        );
    }
}

fn refuse(st: &Shared, remote_write: bool, why: Reject, err: ApiError) -> ApiError {
    st.metrics.reject(remote_write, why);
    tracing::warn!(endpoint = if remote_write { "remote_write" } else { "events" }, reason = %err.msg, "Ingest request refused.");
    err
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the bearer token, when one is configured.
fn authorize(st: &Shared, headers: &HeaderMap, remote_write: bool) -> Result<(), ApiError> {
    let Some(token) = &st.settings.ingest_token else {
        return Ok(());
    };
    let given = headers::bearer(headers);
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        return Ok(());
    }
    let msg = if given.is_none() {
        "missing bearer token: this endpoint requires Authorization: Bearer <ingest token>"
    } else {
        "wrong bearer token"
    };
    Err(refuse(
        st,
        remote_write,
        Reject::Unauthorized,
        ApiError::new(ErrorType::Unauthorized, msg),
    ))
}

/// Reads the body once the gate grants memory for it, within the body timeout and size limit.
async fn read_body(
    st: &Shared,
    headers: &HeaderMap,
    body: Body,
    remote_write: bool,
) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
    let max = st.settings.max_body_bytes;
    let too_large = || {
        refuse(
            st,
            remote_write,
            Reject::TooLarge,
            ApiError::new(
                ErrorType::TooLarge,
                format!("request body exceeds the limit of {max} bytes"),
            ),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let claim = declared.unwrap_or(max).clamp(1, max.min(st.ingest.budget)) as u32;
    let timeout = st.settings.server.body_read_timeout;
    let permit = match tokio::time::timeout(
        timeout,
        st.ingest.bytes.clone().acquire_many_owned(claim),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => {
            return Err(refuse(
                st,
                remote_write,
                Reject::Overloaded,
                ApiError::new(
                    ErrorType::Unavailable,
                    "ingest is holding as much as it may in memory; retry shortly",
                ),
            ))
        }
    };
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
        Ok(Ok(b)) => Ok((b, permit)),
        Ok(Err(e)) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_big {
                Err(too_large())
            } else {
                Err(refuse(
                    st,
                    remote_write,
                    Reject::Malformed,
                    ApiError::bad_data(format!("could not read the request body: {e}")),
                ))
            }
        }
        Err(_) => Err(refuse(
            st,
            remote_write,
            Reject::Timeout,
            ApiError::new(
                ErrorType::RequestTimeout,
                format!(
                    "the request body did not arrive within {} ms",
                    timeout.as_millis()
                ),
            ),
        )),
    }
}

/// Runs CPU-heavy decoding off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorType::Internal, format!("decoding failed: {e}")))
}

fn closed(_: DbError) -> ApiError {
    ApiError::new(ErrorType::Unavailable, "waggle is shutting down")
}

/// Semantic bounds the wire decoder does not know: sizes and values no filter sends.
pub fn check_batch(b: &waggle_wire::Batch) -> Result<(), String> {
    use waggle_wire::{MAX_BATCH_RECORDS, MAX_DROPPED, MAX_DURATION_US};
    if b.records.len() > MAX_BATCH_RECORDS || b.keys.len() > MAX_BATCH_RECORDS {
        return Err(format!(
            "batch holds {} records and {} request shapes; at most {MAX_BATCH_RECORDS} of each are accepted",
            b.records.len(),
            b.keys.len()
        ));
    }
    if b.header.dropped > MAX_DROPPED {
        return Err(format!(
            "batch reports {} dropped events, more than the {MAX_DROPPED} any sender can have dropped",
            b.header.dropped
        ));
    }
    if let Some((i, r)) = b
        .records
        .iter()
        .enumerate()
        .find(|(_, r)| r.duration_us > MAX_DURATION_US)
    {
        return Err(format!(
            "record {i} lasted {} µs, longer than the {MAX_DURATION_US} µs (a year) accepted",
            r.duration_us
        ));
    }
    Ok(())
}

pub async fn events(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&st, &headers, false)?;
    let unsupported = |msg: String| {
        refuse(
            &st,
            false,
            Reject::Unsupported,
            ApiError::new(ErrorType::UnsupportedMedia, msg),
        )
    };
    let json = match headers::media_type(&headers)
        .map_err(&unsupported)?
        .as_deref()
    {
        Some("application/json") => true,
        None | Some("application/x-waggle-batch") | Some("application/octet-stream") => false,
        Some(other) => {
            return Err(unsupported(format!(
                "unsupported Content-Type {other:?}: send {} or application/json",
                waggle_wire::CONTENT_TYPE
            )))
        }
    };
    if let Some(c) = headers::encodings(&headers).map_err(&unsupported)?.first() {
        return Err(unsupported(format!(
            "unsupported Content-Encoding {c:?}: send event batches uncompressed"
        )));
    }
    let (body, _permit) = read_body(&st, &headers, body, false).await?;
    let now = now_ms();
    let batches = blocking(move || -> Result<Vec<crate::db::writer::Logged>, String> {
        let batches = if json {
            json::batches(&body, now)?
        } else {
            let b =
                waggle_wire::decode(&body).map_err(|e| format!("malformed waggle batch: {e}"))?;
            vec![(b, body)]
        };
        batches.iter().try_for_each(|(b, _)| check_batch(b))?;
        Ok(batches)
    })
    .await?
    .map_err(|e| refuse(&st, false, Reject::Malformed, ApiError::bad_data(e)))?;
    let dropped: u64 = batches.iter().map(|(b, _)| b.header.dropped).sum();
    let n = batches.len() as u64;
    let (out, batches) = st.db.events(batches, now).await.map_err(closed)?;
    st.metrics.events_ingested.fetch_add(out.events, Relaxed);
    st.metrics.batches_ingested.fetch_add(n, Relaxed);
    let _ = st
        .metrics
        .events_dropped_by_sidecars
        .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_add(dropped)));
    st.metrics
        .series_refused
        .fetch_add(out.refused_series, Relaxed);
    if let Some(x) = &st.exporter {
        for b in batches {
            x.offer(b);
        }
    }
    let mut body = format!("{{\"accepted\":{}", out.events);
    if out.events_refused() > 0 || out.refused_series > 0 {
        let mut counts = Vec::new();
        for ((family, total), n) in st.ingest.refused_by_family.iter().zip(&out.refused_events) {
            if *n > 0 {
                total.fetch_add(*n, Relaxed);
                counts.push(format!("{}:{n}", super::json::string(family)));
            }
        }
        let limit = st.settings.limits.max_series;
        st.ingest
            .log_limit(limit, out.refused_series, out.events_refused());
        body.push_str(&format!(
            ",\"series_limit\":{limit},\"refused_series\":{},\"not_counted\":{{{}}}",
            out.refused_series,
            counts.join(",")
        ));
    }
    body.push('}');
    Ok((
        StatusCode::ACCEPTED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

pub async fn remote_write(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&st, &headers, true)?;
    let unsupported = |msg: String| {
        refuse(
            &st,
            true,
            Reject::Unsupported,
            ApiError::new(ErrorType::UnsupportedMedia, msg),
        )
    };
    let codings = headers::encodings(&headers).map_err(&unsupported)?;
    if let Some(c) = codings.iter().find(|c| *c != "snappy") {
        return Err(unsupported(format!(
            "unsupported Content-Encoding {c:?}: remote-write bodies are snappy-compressed (block format)"
        )));
    }
    let (body, _permit) = read_body(&st, &headers, body, true).await?;
    let malformed = |e: String| refuse(&st, true, Reject::Malformed, ApiError::bad_data(e));
    let len = snap::raw::decompress_len(&body)
        .map_err(|e| malformed(format!("body is not snappy-compressed (block format): {e}")))?;
    // A tiny body may claim a huge output: bound it before allocating.
    let max_decoded = st.settings.max_body_bytes.saturating_mul(8);
    if len > max_decoded {
        return Err(refuse(
            &st,
            true,
            Reject::TooLarge,
            ApiError::new(
                ErrorType::TooLarge,
                format!("snappy body would decompress to {len} bytes, more than the {max_decoded} allowed"),
            ),
        ));
    }
    let slot = match tokio::time::timeout(
        st.settings.server.body_read_timeout,
        st.ingest.decodes.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => {
            return Err(refuse(
                &st,
                true,
                Reject::Overloaded,
                ApiError::new(
                    ErrorType::Unavailable,
                    "too many remote-write requests are being decoded; retry shortly",
                ),
            ))
        }
    };
    let (req, body) = blocking(move || -> Result<(crate::prompb::Request, Bytes), String> {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .map_err(|e| format!("corrupt snappy body: {e}"))?;
        let req = crate::prompb::decode(raw, &crate::prompb::Limits::default())
            .map_err(|e| e.to_string())?;
        Ok((req, body))
    })
    .await?
    .map_err(malformed)?;
    let total = req.sample_count() as u64;
    let result = st.db.write(req, body, now_ms()).await;
    drop(slot);
    match result {
        Ok(_) => {
            st.metrics.samples_written.fetch_add(total, Relaxed);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(DbError::Refused(e)) => {
            st.metrics.samples_rejected.fetch_add(total, Relaxed);
            if matches!(e, crate::store::Refused::SeriesLimit(_)) {
                st.metrics.series_refused.fetch_add(1, Relaxed);
            }
            Err(refuse(
                &st,
                true,
                Reject::Refused,
                ApiError::bad_data(e.to_string()),
            ))
        }
        Err(e) => Err(closed(e)),
    }
}
