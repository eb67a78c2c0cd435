//! The backend's own counters, exposed at `/metrics` in Prometheus's text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Why an ingest request was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Malformed,
    TooLarge,
    Unauthorized,
    Refused,
}

impl Reject {
    const ALL: [Reject; 4] = [
        Reject::Malformed,
        Reject::TooLarge,
        Reject::Unauthorized,
        Reject::Refused,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::TooLarge => "too_large",
            Reject::Unauthorized => "unauthorized",
            Reject::Refused => "refused",
        }
    }
}

const QUERY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
pub struct SelfMetrics {
    pub events_ingested: AtomicU64,
    pub batches_ingested: AtomicU64,
    pub events_dropped_by_sidecars: AtomicU64,
    pub series_refused: AtomicU64,
    pub samples_written: AtomicU64,
    pub samples_rejected: AtomicU64,
    rejected: [AtomicU64; 4],
    rejected_remote_write: [AtomicU64; 4],
    pub queries: AtomicU64,
    pub query_errors: AtomicU64,
    pub empty_results: AtomicU64,
    query_latency: Mutex<([u64; 10], u64, f64)>,
}

impl SelfMetrics {
    pub fn reject(&self, remote_write: bool, why: Reject) {
        let table = if remote_write {
            &self.rejected_remote_write
        } else {
            &self.rejected
        };
        if let Some(c) = Reject::ALL
            .iter()
            .position(|r| *r == why)
            .and_then(|i| table.get(i))
        {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn observe_query(&self, seconds: f64) {
        if let Ok(mut h) = self.query_latency.lock() {
            for (i, b) in QUERY_BUCKETS.iter().enumerate() {
                if seconds <= *b {
                    if let Some(c) = h.0.get_mut(i) {
                        *c += 1;
                    }
                }
            }
            h.1 += 1;
            h.2 += seconds;
        }
    }

    /// The exposition text; `gauges` are point-in-time values supplied by the caller.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        counter(
            "waggle_events_ingested_total",
            "Mesh events counted into the store.",
            self.events_ingested.load(Relaxed),
        );
        counter(
            "waggle_batches_ingested_total",
            "Event batches accepted.",
            self.batches_ingested.load(Relaxed),
        );
        counter(
            "waggle_events_dropped_by_sidecars_total",
            "Events the sidecar filters report having dropped.",
            self.events_dropped_by_sidecars.load(Relaxed),
        );
        counter(
            "waggle_series_refused_total",
            "New series refused by the series limit.",
            self.series_refused.load(Relaxed),
        );
        counter(
            "waggle_remote_write_samples_total",
            "Remote-written samples stored.",
            self.samples_written.load(Relaxed),
        );
        counter(
            "waggle_remote_write_samples_rejected_total",
            "Remote-written samples in rejected requests.",
            self.samples_rejected.load(Relaxed),
        );
        counter(
            "waggle_queries_total",
            "PromQL queries evaluated.",
            self.queries.load(Relaxed),
        );
        counter(
            "waggle_query_errors_total",
            "PromQL queries that failed.",
            self.query_errors.load(Relaxed),
        );
        counter(
            "waggle_query_empty_results_total",
            "Queries that returned no data or NaN.",
            self.empty_results.load(Relaxed),
        );
        let _ = write!(out, "# HELP waggle_ingest_rejected_total Ingest requests rejected, by endpoint and reason.\n# TYPE waggle_ingest_rejected_total counter\n");
        for (endpoint, table) in [
            ("events", &self.rejected),
            ("remote_write", &self.rejected_remote_write),
        ] {
            for (r, c) in Reject::ALL.iter().zip(table.iter()) {
                let _ = writeln!(
                    out,
                    "waggle_ingest_rejected_total{{endpoint=\"{endpoint}\",reason=\"{}\"}} {}",
                    r.as_str(),
                    c.load(Relaxed)
                );
            }
        }
        for (name, help, v) in gauges {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            );
        }
        if let Ok(h) = self.query_latency.lock() {
            let _ = write!(out, "# HELP waggle_query_duration_seconds PromQL evaluation time.\n# TYPE waggle_query_duration_seconds histogram\n");
            for (b, c) in QUERY_BUCKETS.iter().zip(h.0.iter()) {
                let _ = writeln!(
                    out,
                    "waggle_query_duration_seconds_bucket{{le=\"{b}\"}} {c}"
                );
            }
            let _ = write!(
                out,
                "waggle_query_duration_seconds_bucket{{le=\"+Inf\"}} {}\nwaggle_query_duration_seconds_sum {}\nwaggle_query_duration_seconds_count {}\n",
                h.1, h.2, h.1
            );
        }
        out
    }
}
