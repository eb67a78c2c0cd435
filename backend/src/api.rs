//! The HTTP surface: Prometheus's query API, health, self-metrics and the ingest endpoints.

pub mod error;
pub mod explain;
pub mod ingest;
pub mod json;
pub mod params;
pub mod query;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::config::Settings;
use crate::db::Db;
use crate::honeycomb::query::HoneycombQuery;
use crate::honeycomb::Exporter;
use crate::mesh::Mesh;
use crate::promql::pool::Pool;
use crate::self_metrics::SelfMetrics;
use crate::store::Store;

pub struct AppState {
    pub db: Db,
    /// The threads queries, metadata lookups and explanations run on.
    pub pool: Pool,
    pub settings: Settings,
    pub metrics: SelfMetrics,
    /// True once the store is restored and until shutdown starts: whether Flagger can be served.
    pub ready: AtomicBool,
    pub exporter: Option<Arc<Exporter>>,
    pub honeycomb_query: Option<Arc<HoneycombQuery>>,
    pub ingest: ingest::Gate,
    pub connections: crate::serve::Connections,
    /// Remote write out, once started.
    pub remote_write: std::sync::OnceLock<Arc<crate::remote_write::RemoteWriter>>,
}

pub type Shared = Arc<AppState>;

impl AppState {
    /// Builds the state around an empty store (must run inside a Tokio runtime).
    pub fn new(settings: Settings, exporter: Option<Arc<Exporter>>) -> std::io::Result<Shared> {
        let store = Store::new(settings.limits);
        Self::with_store(settings, exporter, store, None)
    }

    /// Builds the state around `store` (a restored one, with its log and checkpoints).
    pub fn with_store(
        settings: Settings,
        exporter: Option<Arc<Exporter>>,
        store: Store,
        durable: Option<crate::db::writer::Durable>,
    ) -> std::io::Result<Shared> {
        let db = Db::start(
            store,
            Mesh::new(settings.families.clone()),
            crate::db::writer::Options {
                auto_maintain: true,
                durable,
            },
        )?;
        let pool = Pool::new(settings.server.query_max_concurrency)?;
        let honeycomb_query = settings
            .honeycomb_query
            .clone()
            .and_then(|q| match HoneycombQuery::new(q) {
                Ok(h) => Some(Arc::new(h)),
                Err(e) => {
                    tracing::error!(error = %e, "Honeycomb query mode off: cannot build its HTTP client");
                    None
                }
            });
        let ingest = ingest::Gate::new(&settings);
        Ok(Arc::new(Self {
            db,
            pool,
            settings,
            metrics: SelfMetrics::default(),
            ready: AtomicBool::new(true),
            exporter,
            honeycomb_query,
            ingest,
            connections: crate::serve::Connections::default(),
            remote_write: std::sync::OnceLock::new(),
        }))
    }
}

impl AppState {
    /// Log and checkpoint figures, when there is a data directory.
    fn render_durability(&self, out: &mut String) {
        use std::fmt::Write as _;
        if self.settings.durable.is_none() {
            return;
        }
        let g = &self.db.gauges;
        for (name, help, v) in [
            (
                "waggle_wal_bytes_total",
                "Bytes written to the write-ahead log.",
                g.wal_bytes.load(Relaxed),
            ),
            (
                "waggle_wal_last_seq",
                "The last record written to the log.",
                g.applied_seq.load(Relaxed),
            ),
            (
                "waggle_wal_durable_seq",
                "The last record known to be fsynced.",
                g.durable_seq.load(Relaxed),
            ),
            (
                "waggle_checkpoints_total",
                "Checkpoints completed and made durable.",
                g.checkpoints.load(Relaxed),
            ),
            (
                "waggle_checkpoint_failures_total",
                "Checkpoints that failed.",
                g.checkpoint_failures.load(Relaxed),
            ),
            (
                "waggle_checkpoint_bytes",
                "Size of the last checkpoint.",
                g.checkpoint_bytes.load(Relaxed),
            ),
            (
                "waggle_checkpoint_duration_milliseconds",
                "How long the last checkpoint took to write.",
                g.checkpoint_ms.load(Relaxed),
            ),
        ] {
            let _ = write!(out, "# HELP {name} {help}\n{name} {v}\n");
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The query API, health and `/metrics`.
pub fn query_router(state: Shared) -> Router {
    Router::new()
        .route("/api/v1/query", get(query::instant).post(query::instant))
        .route("/api/v1/query_range", get(query::range).post(query::range))
        .route("/api/v1/series", get(query::series).post(query::series))
        .route("/api/v1/labels", get(query::labels).post(query::labels))
        .route("/api/v1/label/{name}/values", get(query::label_values))
        .route("/api/v1/status/buildinfo", get(query::buildinfo))
        .route("/api/v1/metadata", get(query::metadata))
        // Flagger's address keeps its path: `-metrics-server=http://waggle:9090/flagger`.
        .route(
            "/flagger/api/v1/query",
            get(query::flagger_instant).post(query::flagger_instant),
        )
        .route(
            "/honeycomb/api/v1/query",
            get(query::honeycomb).post(query::honeycomb),
        )
        .route("/-/healthy", get(healthy).head(healthy))
        .route("/-/ready", get(ready).head(ready))
        .route("/-/export", get(export).head(export))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            buffer_body,
        ))
        .with_state(state)
}

/// Largest query-API request body (a form POST with a long query).
const MAX_QUERY_BODY: usize = 4 << 20;

/// Reads a query-API request's body within `--body-read-timeout` and [`MAX_QUERY_BODY`], so
/// no extractor waits on a slow client.
async fn buffer_body(
    axum::extract::State(st): axum::extract::State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let timeout = st.settings.server.body_read_timeout;
    let bytes =
        match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_QUERY_BODY)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                return error::ApiError::bad_data(format!(
                    "could not read the request body (at most {MAX_QUERY_BODY} bytes): {e}"
                ))
                .into_response()
            }
            Err(_) => {
                return error::ApiError::new(
                    error::ErrorType::RequestTimeout,
                    format!(
                        "the request body did not arrive within {} ms",
                        timeout.as_millis()
                    ),
                )
                .into_response()
            }
        };
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// `/v1/events` and `/api/v1/write`.
pub fn ingest_router(state: Shared) -> Router {
    Router::new()
        .route("/v1/events", post(ingest::events))
        .route("/api/v1/write", post(ingest::remote_write))
        .with_state(state)
}

async fn healthy() -> &'static str {
    "waggle is Healthy.\n"
}

/// Whether Flagger can be served: the store is up and not shutting down. Export health is
/// `/-/export`'s business; a Honeycomb or remote-write outage never takes the query API out
/// of its Service.
async fn ready(axum::extract::State(st): axum::extract::State<Shared>) -> axum::response::Response {
    if !st.ready.load(Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable: starting or shutting down\n",
        )
            .into_response();
    }
    "waggle is Ready.\n".into_response()
}

/// Export health: 200 when every configured export works, 503 naming the one that does not.
async fn export(
    axum::extract::State(st): axum::extract::State<Shared>,
) -> axum::response::Response {
    let mut problems = Vec::new();
    if let Some(x) = &st.exporter {
        if !x.ready() {
            problems.push("Honeycomb has not accepted the API key (see the log and waggle_honeycomb_key_accepted)");
        }
    }
    let failing = st
        .remote_write
        .get()
        .map(|r| r.failing())
        .unwrap_or_default();
    let mut problems: Vec<String> = problems.into_iter().map(str::to_owned).collect();
    for name in failing {
        problems.push(format!(
            "remote write to {name} is failing (see waggle_remote_storage_failed_attempts_total)"
        ));
    }
    if problems.is_empty() {
        return "export is healthy (or off).\n".into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("export is unhealthy: {}\n", problems.join("; ")),
    )
        .into_response()
}

async fn metrics(axum::extract::State(st): axum::extract::State<Shared>) -> impl IntoResponse {
    let g = &st.db.gauges;
    let mut body = st.metrics.render(&[
        (
            "waggle_series",
            "Series held in memory.",
            g.series.load(Relaxed) as f64,
        ),
        (
            "waggle_store_bytes",
            "Approximate bytes of series data, labels and index (as of the last maintenance).",
            g.bytes.load(Relaxed) as f64,
        ),
        (
            "waggle_late_counts",
            "Counts that arrived after their step left the mutable head.",
            g.late_counts.load(Relaxed) as f64,
        ),
        (
            "waggle_query_slots_busy",
            "Queries running or waiting for one of the --query-max-concurrency slots.",
            st.pool.busy() as f64,
        ),
    ]);
    st.ingest.render(&mut body);
    if let Some(r) = st.remote_write.get() {
        r.render(&mut body);
    }
    st.render_durability(&mut body);
    for (listener, c) in [
        ("query", &st.connections.query),
        ("ingest", &st.connections.ingest),
    ] {
        use std::fmt::Write as _;
        let _ = writeln!(
            body,
            "waggle_connections_open{{listener=\"{listener}\"}} {}\nwaggle_connections_closed_idle_total{{listener=\"{listener}\"}} {}",
            c.open.load(Relaxed),
            c.closed_idle.load(Relaxed)
        );
    }
    if let Some(x) = &st.exporter {
        x.render(&mut body);
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}
