//! Benchmark sections `waggle-bench` prints, beyond those in the binary itself: freshness at
//! waggle and at remote-write receivers, the remote-write encoder and sender, and the write-
//! ahead log and checkpoints. Each returns a Markdown section.

pub mod durability;
pub mod freshness;
pub mod remote_write;

/// (min, median, max).
pub fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (at(0.0), at(0.5), at(1.0))
}

pub fn percentile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// A store holding `series` mesh-shaped counters with `steps` one-second steps of traffic
/// ending at `end_ms` (increments from a fixed generator, as a busy service's would be).
pub fn filled_store(series: usize, steps: i64, end_ms: i64) -> waggle::store::Store {
    use waggle::store::{Kind, Limits, Store};
    let mut store = Store::new(Limits {
        max_series: series + 1000,
        ..Limits::default()
    });
    let ids: Vec<_> = (0..series)
        .map(|i| {
            let (w, code, le) = (i / 64, [200, 503][i % 2], (i / 2) % 32);
            let labels = [
                (
                    "__name__",
                    "istio_request_duration_milliseconds_bucket".to_string(),
                ),
                ("reporter", "destination".to_string()),
                ("destination_workload", format!("svc-{w:04}")),
                ("destination_workload_namespace", "test".to_string()),
                (
                    "destination_service",
                    format!("svc-{w:04}.test.svc.cluster.local"),
                ),
                ("source_workload", "loadtester".to_string()),
                ("source_workload_namespace", "test".to_string()),
                ("response_code", code.to_string()),
                ("le", le.to_string()),
                ("request_protocol", "http".to_string()),
                ("connection_security_policy", "mutual_tls".to_string()),
            ];
            let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            store
                .series(&pairs, Kind::Counter { per_unit: 1.0 })
                .unwrap_or(0)
        })
        .collect();
    let mut rng = waggle_wire::sample::Rng::new(11);
    let start = end_ms - steps * 1000;
    for s in 0..steps {
        let t = start + s * 1000;
        for id in &ids {
            store.add(*id, t, rng.range(0, 12), t);
        }
    }
    store
}
