//! Freshness: from a request's response at the client, through Envoy 1.40 and the filter, to
//! a query counting it, at waggle and at the remote-write receivers it feeds (Prometheus
//! 2.42 and VictoriaMetrics, which waggle writes to with its data directory on).

use anyhow::{Context as _, Result};

use crate::canary::{self, Runtime, Side};
use crate::process::Serve;
use crate::prom::Prometheus;
use crate::victoria::VictoriaMetrics;

pub fn section(waggle: &std::path::Path, quick: bool) -> Result<String> {
    let envoy_bin = crate::envoy::binary().context("no envoy binary: scripts/setup installs it")?;
    let prom_bin =
        crate::prom::binary().context("no prometheus binary: scripts/setup installs it")?;
    let vm_bin = crate::victoria::binary()
        .context("no victoria-metrics binary: scripts/setup installs it")?;
    let wasm = crate::built_filter_wasm().context("the filter .wasm is missing: cargo build --release --target wasm32-wasip1 -p waggle-filter")?;
    let (p, vm) = (
        Prometheus::start(&prom_bin)?,
        VictoriaMetrics::start(&vm_bin)?,
    );
    let dir = std::env::temp_dir().join(format!("waggle-bench-fresh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let prom_url = format!("{}/api/v1/write", p.base());
    let vm_url = vm.write_url();
    let dir_s = dir.display().to_string();
    let backend = Serve::start(
        waggle,
        &[
            "--log-level",
            "warn",
            "--data-dir",
            &dir_s,
            "--remote-write-url",
            &prom_url,
            "--remote-write-url",
            &vm_url,
        ],
    )?;
    let side = Side::start(
        &Runtime::Envoy(envoy_bin),
        "podinfo-primary",
        "v1",
        &wasm,
        backend.ingest,
        "{}",
    )?;
    let n = if quick { 20 } else { 100 };
    let mut rows = String::new();
    for (name, base) in [
        ("waggle", backend.base()),
        ("Prometheus 2.42 (remote write from waggle)", p.base()),
        (
            "VictoriaMetrics 1.79, `-search.latencyOffset=1s`",
            vm.base(),
        ),
    ] {
        let s = canary::freshness(&side, &base, n)?;
        let (lo, mid, hi) = super::stats(s.clone());
        let _ = lo;
        rows.push_str(&format!(
            "| {name} | {mid:.3} | {:.3} | {hi:.3} |\n",
            super::percentile(&s, 0.99)
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!(
        "## Freshness\n\n\
         From a request's response arriving at the client through Envoy 1.40 (filter defaults: 1 s flush) to `sum(istio_requests_total{{...}})` counting it, polled every 5 ms; {n} requests, one at a time, spread over the flush cycle, measured at each place in turn. waggle runs with `--data-dir` and remote-writes to both receivers with the defaults (a round per 1 s step, two steps behind the step being written, sent once the log holds what it read).\n\n\
         | counted by | p50 s | p99 s | max s |\n|---|---|---|---|\n{rows}\n\
         Goals: p99 under 1.5 s at waggle, under 3 s at the Prometheus receiver. With requests this sparse, each batch waits the whole flush interval after its first event, so p50 at waggle sits near 1 s; a receiver adds the two-step lag and a send. For comparison, a Prometheus scraping sidecars every 15 s counts a request 0 to 15 s after it ends (7.5 s on average), VictoriaMetrics' default `-search.latencyOffset` hides the newest 30 s, and Honeycomb's Query Data API rounds time ranges to the minute.\n"
    ))
}
