//! Benchmark sections `waggle-bench` prints, beyond those in the binary itself: freshness at
//! waggle and at remote-write receivers, the remote-write encoder and sender, and the write-
//! ahead log and checkpoints. Each returns a Markdown section.

use std::process::Command;

use anyhow::{bail, Context, Result};

pub mod durability;
pub mod freshness;
pub mod host_calls;
pub mod remote_write;
pub mod traffic;

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

/// (requests/s, p50 ms, p99 ms) from `wrk -t1 --latency` against `127.0.0.1:port`.
pub fn wrk(port: u16, seconds: u32, connections: u32) -> Result<(f64, f64, f64)> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .arg(format!("http://127.0.0.1:{port}/api/info"))
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ms = |v: &str| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
    };
    let rps: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .context(text.clone())?;
    let p50 = field("50%").and_then(|v| ms(&v)).context(text.clone())?;
    let p99 = field("99%").and_then(|v| ms(&v)).context(text.clone())?;
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw errors:\n{text}");
    }
    Ok((rps, p50, p99))
}
