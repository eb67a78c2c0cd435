//! `/api/v1/query`, `/query_range`, `/series`, `/labels`, `/label/<name>/values`, build info.

use std::time::{Duration, Instant};

/// How the `/flagger` prefix begins the error text of an empty or NaN answer.
pub const NO_VALUES: &str = "waggle: no values: ";

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use promql_parser::parser::Expr;

use super::error::{ApiError, ErrorType};
use super::params::{parse_duration_ms, time_param, Params};
use super::{explain, json, now_ms, Shared};
use crate::db::read;
use crate::promql::pool::PoolError;
use crate::promql::{self, Evaluator, Options, Value};

fn ok(data: String, warnings: &[String]) -> Response {
    (
        [(CONTENT_TYPE, "application/json")],
        json::success(&data, warnings),
    )
        .into_response()
}

fn parse_query(q: &str, wrap: bool) -> Result<std::sync::Arc<Expr>, ApiError> {
    let parsed = if q.trim().is_empty() {
        Err("1:1: parse error: no expression found in input".to_owned())
    } else {
        promql::parse_cached(q)
    };
    parsed.map_err(|e| {
        if wrap {
            ApiError::param("query", e)
        } else {
            ApiError::bad_data(e)
        }
    })
}

fn deadline(st: &Shared, p: &Params) -> Result<Instant, ApiError> {
    let mut timeout = st.settings.query_timeout;
    if let Some(t) = p.get("timeout") {
        let ms = parse_duration_ms(t).map_err(|e| ApiError::param("timeout", e))?;
        timeout = timeout.min(Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0)));
    }
    Ok(Instant::now() + timeout)
}

/// Runs `f` on a query thread (parsing, evaluation, explanation and rendering are CPU work
/// that must not hold up the async workers), at most `--query-max-concurrency` at once.
async fn on_pool<T: Send + 'static>(
    st: &Shared,
    deadline: Instant,
    f: impl FnOnce(&Shared) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let st2 = st.clone();
    let started = Instant::now();
    let out = st
        .pool
        .run(deadline, move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&st2))).unwrap_or_else(
                |_| {
                    Err(ApiError::new(
                        ErrorType::Internal,
                        "query evaluation panicked",
                    ))
                },
            )
        })
        .await
        .unwrap_or_else(|e| match e {
            PoolError::Queued(_) => Err(ApiError::new(
                ErrorType::Timeout,
                format!("query timed out in queue: {e}"),
            )),
            PoolError::Closed => Err(ApiError::new(ErrorType::Unavailable, e.to_string())),
        });
    st.metrics
        .queries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    st.metrics.observe_query(started.elapsed().as_secs_f64());
    if out.is_err() {
        st.metrics
            .query_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    out
}

fn options(st: &Shared, deadline: Instant) -> Options {
    Options {
        lookback_ms: st.settings.lookback_ms,
        subquery_step_ms: st.settings.subquery_step_ms,
        max_samples: st.settings.query_max_samples,
        deadline,
    }
}

fn is_empty_or_nan(v: &Value) -> bool {
    match v {
        Value::Vector(v) => v.is_empty() || v.iter().all(|s| s.v.is_nan()),
        Value::Matrix(m) => m.is_empty() || m.iter().all(|s| s.points.iter().all(|p| p.1.is_nan())),
        Value::Scalar(x) => x.is_nan(),
        Value::String(_) => false,
    }
}

/// One query to evaluate: instant (`step` None) or range.
struct Query {
    text: String,
    now: i64,
    start: i64,
    end: i64,
    step: Option<i64>,
    opts: Options,
    /// `/flagger`: an empty or NaN result is an `execution` error whose text is the reason, so
    /// Flagger's event shows it (it prints an error's body, but only "no values found" for an
    /// empty result).
    empty_is_error: bool,
}

/// Parses, evaluates, explains an empty or NaN result, and renders the answer.
async fn run(st: &Shared, q: Query) -> Result<Response, ApiError> {
    let deadline = q.opts.deadline;
    let empty_is_error = q.empty_is_error;
    let (body, warnings, text, empty) = on_pool(st, deadline, move |st| {
        let expr = parse_query(&q.text, q.step.is_none())?;
        let ev = Evaluator::new(&st.db.lock, q.now, q.start, q.end, &expr, q.opts);
        let v = match q.step {
            Some(step) => ev.eval_range(&expr, step)?,
            None => ev.eval_instant(&expr)?,
        };
        let empty = is_empty_or_nan(&v);
        let w = if empty {
            explain::why_empty(&st.db.lock, &expr, (q.start, q.end), q.opts, q.now)
        } else {
            Vec::new()
        };
        let body = json::result(&v, q.start);
        let held = ev.loaded();
        drop((ev, v));
        if held > crate::memory::TRIM_AFTER_SAMPLES {
            crate::memory::release();
        }
        Ok((body, w, q.text, empty))
    })
    .await?;
    if !warnings.is_empty() {
        st.metrics
            .empty_results
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(query = %text, warnings = ?warnings, "Query returned no data.");
    }
    if empty_is_error && empty {
        let why = if warnings.is_empty() {
            "the result is empty or NaN".to_owned()
        } else {
            warnings.join("; ")
        };
        return Err(ApiError::new(
            ErrorType::Execution,
            format!("{NO_VALUES}{why}"),
        ));
    }
    Ok(ok(body, &warnings))
}

pub async fn instant(
    State(st): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    instant_with(&st, &uri, &headers, &body, false).await
}

/// `/flagger/api/v1/query`: [`instant`], with the reason for an empty answer as its error.
pub async fn flagger_instant(
    State(st): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    instant_with(&st, &uri, &headers, &body, true).await
}

async fn instant_with(
    st: &Shared,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    empty_is_error: bool,
) -> Result<Response, ApiError> {
    let p = Params::parse(uri, headers, body);
    let now = now_ms();
    let ts = time_param(&p, "time", now)?;
    let deadline = deadline(st, &p)?;
    let opts = options(st, deadline);
    let text = p.get("query").unwrap_or("").to_owned();
    run(
        st,
        Query {
            text,
            now,
            start: ts,
            end: ts,
            step: None,
            opts,
            empty_is_error,
        },
    )
    .await
}

pub async fn honeycomb(
    State(st): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    use crate::honeycomb::query::QueryError;
    let Some(hq) = st.honeycomb_query.clone() else {
        return Err(ApiError::new(
            ErrorType::Unavailable,
            "the Honeycomb query mode is off: give waggle a query key with HONEYCOMB_QUERY_KEY or --honeycomb-query-key-file",
        ));
    };
    let p = Params::parse(&uri, &headers, &body);
    let query = p.get("query").unwrap_or("").to_owned();
    if query.trim().is_empty() {
        return Err(ApiError::bad_data(
            "1:1: parse error: no expression found in input",
        ));
    }
    if p.get("time").is_some() {
        return Err(ApiError::bad_data(
            "the Honeycomb query mode answers at the present only (Flagger sends no time parameter)",
        ));
    }
    let now = now_ms();
    let hq2 = hq.clone();
    let q2 = query.clone();
    let deadline = Instant::now() + st.settings.query_timeout;
    let planned = on_pool(&st, deadline, move |_| Ok(hq2.plan(&q2))).await?;
    let answer = match planned {
        Ok(plan) => hq.run(plan).await,
        Err(e) => Err(e),
    };
    let answer = answer.map_err(|e| {
        let kind = match e {
            QueryError::Unsupported(_) => ErrorType::BadData,
            QueryError::Timeout(_) => ErrorType::Timeout,
            QueryError::Budget(_) | QueryError::Refused(_) => ErrorType::Unavailable,
            QueryError::Honeycomb(_) => ErrorType::Execution,
        };
        tracing::warn!(query = %query, error = %e, "Honeycomb query failed");
        ApiError::new(kind, e.to_string())
    })?;
    let value = match answer.value {
        Some(v) => crate::promql::Value::Vector(vec![crate::promql::Sample {
            labels: crate::labels::Labels::default(),
            t: now,
            v,
        }]),
        None => crate::promql::Value::Vector(vec![]),
    };
    Ok(ok(json::result(&value, now), &answer.warnings))
}

pub async fn range(
    State(st): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::parse(&uri, &headers, &body);
    let start = time_param(&p, "start", i64::MIN)?;
    let end = time_param(&p, "end", i64::MIN)?;
    if end < start {
        return Err(ApiError::param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let step =
        parse_duration_ms(p.get("step").unwrap_or("")).map_err(|e| ApiError::param("step", e))?;
    if step <= 0 {
        return Err(ApiError::param("step", "zero or negative query resolution step widths are not accepted. Try a positive integer"));
    }
    // Checked in 128 bits: `end - start` of two valid times can pass i64.
    if (i128::from(end) - i128::from(start)) / i128::from(step) > 11_000 {
        return Err(ApiError::bad_data("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"));
    }
    let deadline = deadline(&st, &p)?;
    let opts = options(&st, deadline);
    let text = p.get("query").unwrap_or("").to_owned();
    run(
        &st,
        Query {
            text,
            now: now_ms(),
            start,
            end,
            step: Some(step),
            opts,
            empty_is_error: false,
        },
    )
    .await
}

/// The label matchers of each `match[]` selector.
fn match_sets(raw: &[String]) -> Result<Vec<Vec<promql_parser::label::Matcher>>, ApiError> {
    raw.iter()
        .map(|m| match promql::parse(m) {
            Ok(Expr::VectorSelector(vs)) => {
                let mut ms = vs.matchers.matchers.clone();
                if let Some(n) = vs.name {
                    if !ms.iter().any(|x| x.name == crate::labels::METRIC_NAME) {
                        ms.push(promql_parser::label::Matcher::new(
                            promql_parser::label::MatchOp::Equal,
                            crate::labels::METRIC_NAME,
                            &n,
                        ));
                    }
                }
                Ok(ms)
            }
            Ok(_) => Err(ApiError::param(
                "match[]",
                format!("{m:?} is not a series selector"),
            )),
            Err(e) => Err(ApiError::param("match[]", e)),
        })
        .collect()
}

/// `(now, start, end)` of a metadata request: `start` and `end` default to the retention window.
fn window(st: &Shared, p: &Params) -> Result<(i64, i64, i64), ApiError> {
    let now = now_ms();
    let start = time_param(p, "start", now - st.settings.limits.retention_ms)?;
    let end = time_param(p, "end", now)?;
    Ok((now, start, end))
}

/// The `match[]` selectors of a metadata request, parsed on a query thread.
async fn metadata_sets(
    st: &Shared,
    p: &Params,
    required: bool,
) -> Result<(Vec<Vec<promql_parser::label::Matcher>>, Instant), ApiError> {
    let raw: Vec<String> = p.all("match[]").into_iter().map(str::to_owned).collect();
    if required && raw.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let deadline = Instant::now() + st.settings.query_timeout;
    let sets = on_pool(st, deadline, move |_| match_sets(&raw)).await?;
    Ok((sets, deadline))
}

pub async fn series(
    State(st): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::parse(&uri, &headers, &body);
    let (now, start, end) = window(&st, &p)?;
    let (sets, deadline) = metadata_sets(&st, &p, true).await?;
    let data = on_pool(&st, deadline, move |st| {
        let stop = || Instant::now() > deadline;
        let mut labels = read::each_matching(
            &st.db.lock,
            &sets,
            Some((start, end, now)),
            stop,
            |s, id| s.labels(id),
        );
        if Instant::now() > deadline {
            return Err(ApiError::new(
                ErrorType::Timeout,
                "query timed out in series lookup",
            ));
        }
        labels.sort();
        Ok(format!(
            "[{}]",
            labels
                .iter()
                .map(json::labels)
                .collect::<Vec<_>>()
                .join(",")
        ))
    })
    .await?;
    Ok(ok(data, &[]))
}

pub async fn labels(
    State(st): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::parse(&uri, &headers, &body);
    let (now, start, end) = window(&st, &p)?;
    let (sets, deadline) = metadata_sets(&st, &p, false).await?;
    let data = on_pool(&st, deadline, move |st| {
        let names = if sets.is_empty() {
            st.db.lock.read().label_names(None)
        } else {
            let stop = || Instant::now() > deadline;
            let mut names: Vec<String> = read::each_matching(
                &st.db.lock,
                &sets,
                Some((start, end, now)),
                stop,
                |s, id| s.label_names(Some(&[id])),
            )
            .into_iter()
            .flatten()
            .collect();
            names.sort();
            names.dedup();
            names
        };
        Ok(json::string_list(&names))
    })
    .await?;
    Ok(ok(data, &[]))
}

pub async fn label_values(
    State(st): State<Shared>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !crate::families::is_label_name(&name) {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let p = Params::parse(&uri, &headers, &[]);
    let (now, start, end) = window(&st, &p)?;
    let (sets, deadline) = metadata_sets(&st, &p, false).await?;
    let data = on_pool(&st, deadline, move |st| {
        let values = if sets.is_empty() {
            st.db.lock.read().label_values(&name, None)
        } else {
            let stop = || Instant::now() > deadline;
            let mut values: Vec<String> = read::each_matching(
                &st.db.lock,
                &sets,
                Some((start, end, now)),
                stop,
                |s, id| s.label_values(&name, Some(&[id])),
            )
            .into_iter()
            .flatten()
            .collect();
            values.sort();
            values.dedup();
            values
        };
        Ok(json::string_list(&values))
    })
    .await?;
    Ok(ok(data, &[]))
}

pub async fn buildinfo() -> Response {
    // The API is that of Prometheus 2.42; the revision says which program answers.
    let data = format!(
        "{{\"version\":\"2.42.0\",\"revision\":{},\"branch\":\"waggle\",\"buildUser\":\"waggle\",\"buildDate\":\"\",\"goVersion\":\"none (Rust)\"}}",
        json::string(&format!("waggle {}", env!("CARGO_PKG_VERSION")))
    );
    ok(data, &[])
}

/// Metadata exists only for scraped targets in Prometheus; waggle scrapes none.
pub async fn metadata() -> Response {
    ok("{}".into(), &[])
}
