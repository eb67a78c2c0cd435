//! The HTTP surface: Prometheus's query API, health, self-metrics and the ingest endpoints.

pub mod error;
pub mod explain;
pub mod ingest;
pub mod json;
pub mod params;
pub mod query;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::config::Settings;
use crate::honeycomb::query::HoneycombQuery;
use crate::honeycomb::Exporter;
use crate::mesh::Mesh;
use crate::self_metrics::SelfMetrics;
use crate::store::Store;

/// What one lock guards: the store and the family table that writes into it.
pub struct Db {
    pub store: Store,
    pub mesh: Mesh,
}

pub struct AppState {
    pub db: RwLock<Db>,
    pub settings: Settings,
    pub metrics: SelfMetrics,
    /// False once shutdown starts.
    pub ready: AtomicBool,
    pub exporter: Option<Arc<Exporter>>,
    pub honeycomb_query: Option<Arc<HoneycombQuery>>,
}

pub type Shared = Arc<AppState>;

impl AppState {
    pub fn new(settings: Settings, exporter: Option<Arc<Exporter>>) -> Shared {
        let db = Db {
            store: Store::new(settings.limits),
            mesh: Mesh::new(settings.families.clone()),
        };
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
        Arc::new(Self {
            db: RwLock::new(db),
            settings,
            metrics: SelfMetrics::default(),
            ready: AtomicBool::new(true),
            exporter,
            honeycomb_query,
        })
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
        .route(
            "/honeycomb/api/v1/query",
            get(query::honeycomb).post(query::honeycomb),
        )
        .route("/-/healthy", get(healthy).head(healthy))
        .route("/-/ready", get(ready).head(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// `/v1/events` and `/api/v1/write`.
pub fn ingest_router(state: Shared) -> Router {
    Router::new()
        .route("/v1/events", post(ingest::events))
        .route("/api/v1/write", post(ingest::remote_write))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.settings.max_body_bytes,
        ))
        .with_state(state)
}

async fn healthy() -> &'static str {
    "waggle is Healthy.\n"
}

async fn ready(axum::extract::State(st): axum::extract::State<Shared>) -> axum::response::Response {
    if !st.ready.load(std::sync::atomic::Ordering::Relaxed) {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable: shutting down\n",
        )
            .into_response();
    }
    match &st.exporter {
        Some(x) if !x.ready() => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable: Honeycomb has not accepted the API key (see the log and waggle_honeycomb_key_accepted)\n",
        )
            .into_response(),
        _ => "waggle is Ready.\n".into_response(),
    }
}

async fn metrics(axum::extract::State(st): axum::extract::State<Shared>) -> impl IntoResponse {
    let (series, bytes, late) = match st.db.read() {
        Ok(db) => (
            db.store.series_count() as f64,
            db.store.bytes() as f64,
            db.store.stats.late_counts as f64,
        ),
        Err(_) => (f64::NAN, f64::NAN, f64::NAN),
    };
    let mut body = st.metrics.render(&[
        ("waggle_series", "Series held in memory.", series),
        (
            "waggle_store_bytes",
            "Approximate bytes of series data and labels.",
            bytes,
        ),
        (
            "waggle_late_counts",
            "Counts that arrived after their step left the mutable head.",
            late,
        ),
    ]);
    if let Some(x) = &st.exporter {
        x.render(&mut body);
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}
