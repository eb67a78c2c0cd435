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
    /// An unsupported Content-Type or Content-Encoding.
    Unsupported,
    /// The body did not arrive within `--body-read-timeout`.
    Timeout,
    /// Memory or decode slots stayed taken until the body timeout.
    Overloaded,
}

impl Reject {
    const ALL: [Reject; 7] = [
        Reject::Malformed,
        Reject::TooLarge,
        Reject::Unauthorized,
        Reject::Refused,
        Reject::Unsupported,
        Reject::Timeout,
        Reject::Overloaded,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::TooLarge => "too_large",
            Reject::Unauthorized => "unauthorized",
            Reject::Refused => "refused",
            Reject::Unsupported => "unsupported",
            Reject::Timeout => "timeout",
            Reject::Overloaded => "overloaded",
        }
    }
}

const QUERY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 5.0,
];

/// A Prometheus histogram of seconds with ten fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    buckets: [f64; 10],
    /// (cumulative bucket counts, count, sum)
    state: Mutex<([u64; 10], u64, f64)>,
}

impl Histogram {
    pub fn new(buckets: [f64; 10]) -> Self {
        Self {
            buckets,
            state: Mutex::new(([0; 10], 0, 0.0)),
        }
    }

    pub fn observe(&self, seconds: f64) {
        if let Ok(mut h) = self.state.lock() {
            for (b, c) in self.buckets.iter().zip(h.0.iter_mut()) {
                if seconds <= *b {
                    *c += 1;
                }
            }
            h.1 += 1;
            h.2 += seconds;
        }
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let Ok(h) = self.state.lock() else {
            return;
        };
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        for (b, c) in self.buckets.iter().zip(h.0.iter()) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = write!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}\n",
            h.1, h.2, h.1
        );
    }
}

#[derive(Debug)]
pub struct SelfMetrics {
    pub events_ingested: AtomicU64,
    pub batches_ingested: AtomicU64,
    pub events_dropped_by_sidecars: AtomicU64,
    pub series_refused: AtomicU64,
    pub samples_written: AtomicU64,
    pub samples_rejected: AtomicU64,
    rejected: [AtomicU64; 7],
    rejected_remote_write: [AtomicU64; 7],
    pub queries: AtomicU64,
    pub query_errors: AtomicU64,
    pub empty_results: AtomicU64,
    query_latency: Histogram,
}

impl Default for SelfMetrics {
    fn default() -> Self {
        Self {
            events_ingested: AtomicU64::default(),
            batches_ingested: AtomicU64::default(),
            events_dropped_by_sidecars: AtomicU64::default(),
            series_refused: AtomicU64::default(),
            samples_written: AtomicU64::default(),
            samples_rejected: AtomicU64::default(),
            rejected: Default::default(),
            rejected_remote_write: Default::default(),
            queries: AtomicU64::default(),
            query_errors: AtomicU64::default(),
            empty_results: AtomicU64::default(),
            query_latency: Histogram::new(QUERY_BUCKETS),
        }
    }
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
        self.query_latency.observe(seconds);
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
        self.query_latency.render(
            &mut out,
            "waggle_query_duration_seconds",
            "PromQL evaluation time.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let h = Histogram::new(QUERY_BUCKETS);
        h.observe(0.002);
        h.observe(7.0);
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "X.");
        for line in [
            "# TYPE x_seconds histogram",
            "x_seconds_bucket{le=\"0.001\"} 0",
            "x_seconds_bucket{le=\"0.0025\"} 1",
            "x_seconds_bucket{le=\"5\"} 1",
            "x_seconds_bucket{le=\"+Inf\"} 2",
            "x_seconds_sum 7.002",
            "x_seconds_count 2",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
    }
}
