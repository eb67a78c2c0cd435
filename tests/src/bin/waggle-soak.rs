//! A soak of the release `waggle serve`: sustained ingest (default 50,000 events/s in
//! 500-event batches) with Flagger's two queries every 100 ms and a heavy query every 10 s.
//! Prints, per minute, ingest and query latency (p50, p99, max) and resident memory, then
//! the events accepted against the events the store counted. Usage:
//! `waggle-soak [--minutes N] [--events-per-second N] [--waggle PATH]`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use waggle_tests::client::{self, now_ms, WIRE};
use waggle_tests::process::{rss, Serve};
use waggle_wire::{sample, BatchBuilder, Header};

const BATCH: usize = 500;
const WORKLOADS: usize = 50;
const SENDERS: usize = 4;

struct Opts {
    minutes: u64,
    rate: u64,
    waggle: std::path::PathBuf,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        minutes: 10,
        rate: 50_000,
        waggle: std::env::current_exe()?.with_file_name("waggle"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().context("a value after {a}");
        match a.as_str() {
            "--minutes" => o.minutes = value()?.parse()?,
            "--events-per-second" => o.rate = value()?.parse()?,
            "--waggle" => o.waggle = value()?.into(),
            other => bail!("unknown argument {other:?}; usage: waggle-soak [--minutes N] [--events-per-second N] [--waggle PATH]"),
        }
    }
    Ok(o)
}

/// Latencies (seconds) per minute of the run, for one kind of request.
#[derive(Default)]
struct PerMinute(Mutex<Vec<Vec<f64>>>);

impl PerMinute {
    fn add(&self, minute: usize, seconds: f64) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() <= minute {
                m.resize(minute + 1, Vec::new());
            }
            m[minute].push(seconds);
        }
    }

    fn row(&self, minute: usize) -> String {
        let mut v = self
            .0
            .lock()
            .map(|m| m.get(minute).cloned().unwrap_or_default())
            .unwrap_or_default();
        if v.is_empty() {
            return "– / – / –".into();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] * 1000.0;
        format!("{:.1} / {:.1} / {:.1}", at(0.5), at(0.99), at(1.0))
    }
}

fn batch(workload: usize, seq: u64) -> Vec<u8> {
    let now_us = now_ms() as u64 * 1000;
    let mut b = BatchBuilder::new();
    for (i, mut e) in sample::inbound(BATCH, seq, false).into_iter().enumerate() {
        e.duration_us = e.duration_us.min(300_000);
        e.start_unix_us =
            now_us - 1_000_000 + (i as u64 * 1_000_000 / BATCH as u64) - e.duration_us.min(900_000);
        b.push(&e);
    }
    let header = Header {
        local: sample::workload(
            &format!("svc-{workload:02}"),
            "test",
            &format!("svc-{workload:02}"),
            "v1",
        ),
        sequence: seq,
        ..sample::header(seq)
    };
    b.finish(&header)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waggle-soak: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let o = opts()?;
    let serve = Serve::start(&o.waggle, &["--log-level", "warn"])?;
    let (base, ingest_base) = (serve.base(), serve.ingest_base());
    let started = Instant::now();
    let minute = move || (started.elapsed().as_secs() / 60) as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let (ingest_lat, flagger_lat, heavy_lat) = (
        Arc::new(PerMinute::default()),
        Arc::new(PerMinute::default()),
        Arc::new(PerMinute::default()),
    );
    let batches_per_second = (o.rate as f64 / BATCH as f64).max(1.0);
    let mut threads = Vec::new();
    for sender in 0..SENDERS {
        let (stop, accepted, refused, lat, url) = (
            stop.clone(),
            accepted.clone(),
            refused.clone(),
            ingest_lat.clone(),
            ingest_base.clone(),
        );
        let gap = Duration::from_secs_f64(SENDERS as f64 / batches_per_second);
        threads.push(std::thread::spawn(move || {
            let http = waggle_tests::prom::client();
            let mut seq = sender as u64 * 1_000_000_000;
            let mut next = Instant::now();
            while !stop.load(Relaxed) {
                seq += 1;
                let body = batch((seq as usize * SENDERS + sender) % WORKLOADS, seq);
                let t = Instant::now();
                let r = http
                    .post(format!("{url}/v1/events"))
                    .header(WIRE.0, WIRE.1)
                    .body(body)
                    .send()
                    .and_then(|r| r.json::<serde_json::Value>());
                lat.add(minute(), t.elapsed().as_secs_f64());
                match r.ok().and_then(|v| v["accepted"].as_u64()) {
                    Some(n) => accepted.fetch_add(n, Relaxed),
                    None => refused.fetch_add(1, Relaxed),
                };
                next += gap;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }));
    }
    let querier = |every: Duration, lat: Arc<PerMinute>, queries: Vec<String>| {
        let (stop, base) = (stop.clone(), base.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Relaxed) {
                let t = Instant::now();
                let _ = client::query(&base, &queries[i % queries.len()], &[]);
                lat.add(minute(), t.elapsed().as_secs_f64());
                i += 1;
                std::thread::sleep(every.saturating_sub(t.elapsed()));
            }
        })
    };
    let flagger: Vec<String> = (0..WORKLOADS)
        .flat_map(|w| {
            [
                format!(r#"sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="test",destination_workload=~"svc-{w:02}",response_code!~"5.*"}}[1m])) / sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="test",destination_workload=~"svc-{w:02}"}}[1m])) * 100"#),
                format!(r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{reporter="destination",destination_workload_namespace="test",destination_workload=~"svc-{w:02}"}}[1m])) by (le))"#),
            ]
        })
        .collect();
    threads.push(querier(
        Duration::from_millis(100),
        flagger_lat.clone(),
        flagger,
    ));
    threads.push(querier(
        Duration::from_secs(10),
        heavy_lat.clone(),
        vec![r#"histogram_quantile(0.99, sum by (le, destination_workload) (rate(istio_request_duration_milliseconds_bucket[5m])))"#.into()],
    ));
    let mut memory = Vec::new();
    let total = Duration::from_secs(o.minutes * 60);
    while started.elapsed() < total {
        memory.push((started.elapsed().as_secs(), rss(serve.pid())?));
        std::thread::sleep(Duration::from_secs(10).min(total.saturating_sub(started.elapsed())));
    }
    stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    memory.push((started.elapsed().as_secs(), rss(serve.pid())?));
    std::thread::sleep(Duration::from_secs(2));
    let counted = client::value(
        &base,
        r#"sum(istio_requests_total{reporter="destination"})"#,
    )
    .unwrap_or(0.0);
    let ingested = client::metric(&base, "waggle_events_ingested_total");
    let accepted = accepted.load(Relaxed);

    println!("## Soak: {} min at {} events/s\n", o.minutes, o.rate);
    println!(
        "`waggle serve` (release) on this machine; {SENDERS} senders post {BATCH}-event batches from {WORKLOADS} workloads; Flagger's success-rate and p99 queries every 100 ms (one workload each time, round robin); `histogram_quantile(0.99, sum by (le, destination_workload) (rate(istio_request_duration_milliseconds_bucket[5m])))` every 10 s. Latencies in ms, from the client.\n"
    );
    println!("| minute | ingest p50 / p99 / max | Flagger query p50 / p99 / max | heavy query p50 / p99 / max | RSS at its end MiB |\n|---|---|---|---|---|");
    for m in 0..o.minutes as usize {
        let rss_end = memory
            .iter()
            .rev()
            .find(|(s, _)| *s <= (m as u64 + 1) * 60)
            .map_or(0.0, |(_, b)| *b as f64 / (1 << 20) as f64);
        println!(
            "| {} | {} | {} | {} | {rss_end:.0} |",
            m + 1,
            ingest_lat.row(m),
            flagger_lat.row(m),
            heavy_lat.row(m)
        );
    }
    let mib = |i: usize| {
        memory
            .get(i)
            .map_or(0.0, |(_, b)| *b as f64 / (1 << 20) as f64)
    };
    println!(
        "\nRSS: {:.0} MiB after 10 s, {:.0} MiB at the middle, {:.0} MiB at the end.\n\nEvents: {accepted} accepted (202), {} requests refused or failed, {ingested:.0} counted by `waggle_events_ingested_total`, {counted:.0} in `sum(istio_requests_total{{reporter=\"destination\"}})`{}.\n",
        mib(1),
        mib(memory.len() / 2),
        mib(memory.len() - 1),
        refused.load(Relaxed),
        if (counted - accepted as f64).abs() < 0.5 { ": every accepted event is counted" } else { ": MISMATCH" }
    );
    Ok(())
}
