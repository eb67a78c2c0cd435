//! Prometheus 2.42 beside waggle: a launcher, a deterministic dataset written to both by remote
//! write, and a query client. The dataset mirrors the PromQL compliance suite's demo service
//! (gauges, counters with resets, histograms, an intermittent metric with stale markers) plus
//! Istio-shaped series for Flagger's queries.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use waggle::api::ingest::{RwLabel, RwSample, RwTimeSeries, WriteRequest};

/// 2026-01-01T00:00:00Z: the dataset's first sample.
pub const T0_MS: i64 = 1_767_225_600_000;
/// The dataset spans one hour.
pub const SPAN_MS: i64 = 3_600_000;
pub const SCRAPE_MS: i64 = 15_000;
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WAGGLE_PROMETHEUS") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    })
}

pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus with the remote-write receiver and no scrape targets.
    pub fn start(binary: &std::path::Path) -> Result<Self> {
        let port = crate::envoy::free_port();
        let dir = std::env::temp_dir().join(format!("waggle-prom-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 15s\n")?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--storage.tsdb.retention.time=100y")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log"))?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut p = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "prometheus exited with {status}: {}",
                    std::fs::read_to_string(p.dir.join("prometheus.log")).unwrap_or_default()
                );
            }
            if crate::envoy::get(port, "/-/ready")
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
            {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready after 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// waggle serving in this process, with a retention long enough for the fixed dataset.
/// Dropping it shuts the server down the way SIGTERM does, and waits for that to finish.
pub struct Waggle {
    pub query: std::net::SocketAddr,
    pub ingest: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<std::thread::JoinHandle<()>>,
}

impl Waggle {
    pub fn start(extra: &[&str]) -> Result<Self> {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            serve: waggle::config::ServeArgs,
        }
        let mut argv = vec!["waggle"];
        for flag in ["--listen", "--ingest-listen"] {
            if !extra.contains(&flag) {
                argv.extend_from_slice(&[flag, "127.0.0.1:0"]);
            }
        }
        if !extra.contains(&"--retention") {
            argv.extend_from_slice(&["--retention", "100y"]);
        }
        argv.extend_from_slice(extra);
        let settings = Args::try_parse_from(argv)?.serve.resolve()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let stop = async move {
                let _ = stop_rx.await;
            };
            if let Err(e) = rt.block_on(waggle::serve::run(settings, Some(tx), stop)) {
                eprintln!("waggle serve: {e:#}");
            }
        });
        let (query, ingest) = rx.blocking_recv().context("waggle did not start")?;
        Ok(Self {
            query,
            ingest,
            stop: Some(stop_tx),
            done: Some(done),
        })
    }

    /// Shuts down as on SIGTERM (ingest stops, the Honeycomb queue drains) and waits.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.join();
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.query)
    }

    pub fn ingest_base(&self) -> String {
        format!("http://{}", self.ingest)
    }
}

impl Drop for Waggle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The value of one series (`name` or `name{labels}` exactly as written) in a text exposition.
pub fn exposed(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// Remote-writes `series` (time-ordered within each series) to `url`, one request per
/// `chunk_ms` of `[from, to]`, so every request is in order across series as a scraping
/// Prometheus would send it.
pub fn remote_write(
    url: &str,
    series: &[RwTimeSeries],
    from: i64,
    to: i64,
    chunk_ms: i64,
) -> Result<()> {
    let c = client();
    let mut t = from;
    while t <= to {
        let req = WriteRequest {
            timeseries: series
                .iter()
                .map(|s| RwTimeSeries {
                    labels: s.labels.clone(),
                    samples: s
                        .samples
                        .iter()
                        .filter(|x| x.timestamp >= t && x.timestamp < t + chunk_ms)
                        .cloned()
                        .collect(),
                })
                .filter(|s| !s.samples.is_empty())
                .collect(),
        };
        t += chunk_ms;
        if req.timeseries.is_empty() {
            continue;
        }
        let body = snap::raw::Encoder::new().compress_vec(&prost::Message::encode_to_vec(&req))?;
        let resp = c
            .post(url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body)
            .send()?;
        if !resp.status().is_success() {
            bail!(
                "remote write to {url}: {} {}",
                resp.status(),
                resp.text().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// The dataset's whole span, five minutes a request.
pub fn remote_write_dataset(url: &str, series: &[RwTimeSeries]) -> Result<()> {
    remote_write(url, series, T0_MS, T0_MS + SPAN_MS + 5 * 60_000, 5 * 60_000)
}

fn series(labels: &[(&str, &str)], samples: Vec<(i64, f64)>) -> RwTimeSeries {
    let mut labels: Vec<RwLabel> = labels
        .iter()
        .map(|(n, v)| RwLabel {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    RwTimeSeries {
        labels,
        samples: samples
            .into_iter()
            .map(|(timestamp, value)| RwSample { value, timestamp })
            .collect(),
    }
}

/// Scrape times of instance `i`: every 15 s, offset per instance so windows do not align.
fn scrapes(i: usize) -> impl Iterator<Item = i64> {
    let offset = 1_000 + 3_217 * i as i64;
    (0..SPAN_MS / SCRAPE_MS).map(move |k| T0_MS + offset + k * SCRAPE_MS)
}

/// The whole dataset, deterministic.
pub fn dataset() -> Vec<RwTimeSeries> {
    let mut out = Vec::new();
    let mut rng = waggle_wire::sample::Rng::new(20260101);
    let instances = [
        "demo.promlabs.com:10000",
        "demo.promlabs.com:10001",
        "demo.promlabs.com:10002",
    ];
    for (i, inst) in instances.iter().enumerate() {
        let base = [("job", "demo"), ("instance", *inst)];
        for (j, ty) in ["used", "cached", "buffers", "free"].iter().enumerate() {
            let s = scrapes(i)
                .map(|t| {
                    (
                        t,
                        1e9 * (1.0 + j as f64)
                            + 2e8 * ((t - T0_MS) as f64 / 600_000.0 + i as f64).sin(),
                    )
                })
                .collect();
            out.push(series(
                &[
                    base[0],
                    base[1],
                    ("__name__", "demo_memory_usage_bytes"),
                    ("type", ty),
                ],
                s,
            ));
        }
        out.push(series(
            &[base[0], base[1], ("__name__", "demo_num_cpus")],
            scrapes(i).map(|t| (t, 4.0 * (i as f64 + 1.0))).collect(),
        ));
        for (j, mode) in ["user", "system", "idle"].iter().enumerate() {
            let mut v = 0.0;
            let s = scrapes(i)
                .enumerate()
                .map(|(k, t)| {
                    // Instance 1 restarts at minute 31: a counter reset.
                    if i == 1 && k == 124 {
                        v = 0.0;
                    }
                    v += (j as f64 + 1.0) * 0.7 + (rng.range(0, 100) as f64) / 100.0;
                    (t, v)
                })
                .collect();
            out.push(series(
                &[
                    base[0],
                    base[1],
                    ("__name__", "demo_cpu_usage_seconds_total"),
                    ("mode", mode),
                ],
                s,
            ));
        }
        out.push(series(
            &[base[0], base[1], ("__name__", "demo_disk_usage_bytes")],
            scrapes(i)
                .map(|t| (t, 5e10 + (t - T0_MS) as f64 * 1.5e3 * (i as f64 + 1.0)))
                .collect(),
        ));
        out.push(series(
            &[
                base[0],
                base[1],
                ("__name__", "demo_batch_last_success_timestamp_seconds"),
            ],
            scrapes(i)
                .map(|t| (t, ((t - 60_000 * ((t / 60_000) % 3)) / 1000) as f64))
                .collect(),
        ));
        // Present only in even minutes; a stale marker on the first scrape of each odd minute.
        let mut s = Vec::new();
        let mut present = false;
        for t in scrapes(i) {
            let even = ((t - T0_MS) / 60_000) % 2 == 0;
            if even {
                s.push((t, (t - T0_MS) as f64 / 1000.0));
            } else if present {
                s.push((t, f64::from_bits(STALE_NAN)));
            }
            present = even;
        }
        out.push(series(
            &[base[0], base[1], ("__name__", "demo_intermittent_metric")],
            s,
        ));
        histogram(&mut out, &mut rng, i, &base);
    }
    out.push(series(
        &[("__name__", "demo_weird"), ("kind", "nan")],
        scrapes(0).map(|t| (t, f64::NAN)).collect(),
    ));
    out.push(series(
        &[("__name__", "demo_weird"), ("kind", "inf")],
        scrapes(0).map(|t| (t, f64::INFINITY)).collect(),
    ));
    out.push(series(
        &[("__name__", "demo_weird"), ("kind", "neginf")],
        scrapes(0).map(|t| (t, f64::NEG_INFINITY)).collect(),
    ));
    out.push(series(
        &[("__name__", "demo_weird"), ("kind", "tiny")],
        scrapes(0)
            .map(|t| (t, 1.25e-9 * ((t / 1000) % 7) as f64))
            .collect(),
    ));
    irregular(&mut out, &mut rng);
    istio(&mut out, &mut rng);
    out
}

/// Counters and gauges with uneven gaps (5 s to 50 s, some long outages), so every branch of
/// rate extrapolation and of range boundaries is reached.
fn irregular(out: &mut Vec<RwTimeSeries>, rng: &mut waggle_wire::sample::Rng) {
    for (i, inst) in ["a", "b", "c", "d"].iter().enumerate() {
        let (mut t, mut v, mut g) = (T0_MS + 700 * i as i64, 0.0, 0.0);
        let (mut counter, mut gauge) = (Vec::new(), Vec::new());
        while t < T0_MS + SPAN_MS {
            v += rng.range(0, 50) as f64 / 10.0;
            // An occasional reset, and for "d" a counter that starts high.
            if rng.range(0, 60) == 0 {
                v = rng.range(0, 3) as f64;
            }
            if i == 3 && counter.is_empty() {
                v = 1e6;
            }
            g += rng.range(0, 200) as f64 - 100.0;
            counter.push((t, v));
            gauge.push((t, g));
            t += if rng.range(0, 40) == 0 {
                90_000 + rng.range(0, 200_000) as i64
            } else {
                5_000 + rng.range(0, 45_000) as i64
            };
        }
        out.push(series(
            &[("__name__", "demo_irregular_total"), ("instance", inst)],
            counter,
        ));
        out.push(series(
            &[("__name__", "demo_irregular_gauge"), ("instance", inst)],
            gauge,
        ));
    }
}

fn histogram(
    out: &mut Vec<RwTimeSeries>,
    rng: &mut waggle_wire::sample::Rng,
    i: usize,
    base: &[(&str, &str); 2],
) {
    let bounds = [
        0.0001,
        0.00015,
        0.0002,
        0.0003,
        0.0005,
        0.001,
        0.002,
        0.005,
        0.01,
        0.05,
        0.1,
        f64::INFINITY,
    ];
    for method in ["GET", "POST"] {
        for path in ["/api/foo", "/api/bar"] {
            for status in ["200", "500"] {
                let mut counts = vec![0.0; bounds.len()];
                let (mut sum, mut count) = (0.0, 0.0);
                let mut rows: Vec<Vec<(i64, f64)>> = vec![Vec::new(); bounds.len() + 2];
                for t in scrapes(i) {
                    let n = rng.range(0, if status == "200" { 20 } else { 3 });
                    for _ in 0..n {
                        let v = 0.00005 * (1 + rng.range(0, 400)) as f64;
                        for (b, c) in bounds.iter().zip(counts.iter_mut()) {
                            if v <= *b {
                                *c += 1.0;
                            }
                        }
                        sum += v;
                        count += 1.0;
                    }
                    for (r, c) in rows.iter_mut().zip(counts.iter()) {
                        r.push((t, *c));
                    }
                    rows[bounds.len()].push((t, sum));
                    rows[bounds.len() + 1].push((t, count));
                }
                let l = |name: &'static str| {
                    [
                        base[0],
                        base[1],
                        ("__name__", name),
                        ("method", method),
                        ("path", path),
                        ("status", status),
                    ]
                };
                for (b, r) in bounds.iter().zip(rows.iter()) {
                    let le = if b.is_infinite() {
                        "+Inf".to_owned()
                    } else {
                        format!("{b}")
                    };
                    let mut ls = l("demo_api_request_duration_seconds_bucket").to_vec();
                    ls.push(("le", &le));
                    out.push(series(&ls, r.clone()));
                }
                out.push(series(
                    &l("demo_api_request_duration_seconds_sum"),
                    rows[bounds.len()].clone(),
                ));
                out.push(series(
                    &l("demo_api_request_duration_seconds_count"),
                    rows[bounds.len() + 1].clone(),
                ));
            }
        }
    }
}

/// Istio counters for a primary and a canary, as a 15 s scrape of sidecars would give.
fn istio(out: &mut Vec<RwTimeSeries>, rng: &mut waggle_wire::sample::Rng) {
    let buckets = waggle::families::ENVOY_BUCKETS;
    for (w, err_pct, slow) in [("podinfo-primary", 1u64, 1.0), ("podinfo", 20, 3.0)] {
        let mut total: std::collections::BTreeMap<String, f64> = Default::default();
        let mut rows: std::collections::BTreeMap<String, Vec<(i64, f64)>> = Default::default();
        let mut hist = vec![0.0; buckets.len() + 1];
        let mut hrows: Vec<Vec<(i64, f64)>> = vec![Vec::new(); buckets.len() + 1];
        for t in scrapes(2) {
            for _ in 0..rng.range(10, 40) {
                let code = if rng.range(0, 100) < err_pct {
                    "503"
                } else {
                    "200"
                };
                *total.entry(code.into()).or_default() += 1.0;
                let ms = (1 + rng.range(0, 200)) as f64 * slow;
                for (b, c) in buckets
                    .iter()
                    .chain(std::iter::once(&f64::INFINITY))
                    .zip(hist.iter_mut())
                {
                    if ms <= *b {
                        *c += 1.0;
                    }
                }
            }
            for code in ["200", "503"] {
                rows.entry(code.into())
                    .or_default()
                    .push((t, *total.get(code).unwrap_or(&0.0)));
            }
            for (r, c) in hrows.iter_mut().zip(hist.iter()) {
                r.push((t, *c));
            }
        }
        let base = [
            ("reporter", "destination"),
            ("destination_workload", w),
            ("destination_workload_namespace", "test"),
        ];
        for (code, r) in rows {
            let mut l = base.to_vec();
            l.push(("__name__", "istio_requests_total"));
            l.push(("response_code", &code));
            out.push(series(&l, r));
        }
        for (b, r) in buckets
            .iter()
            .chain(std::iter::once(&f64::INFINITY))
            .zip(hrows)
        {
            let le = waggle::families::le(*b);
            let mut l = base.to_vec();
            l.push(("__name__", "istio_request_duration_milliseconds_bucket"));
            l.push(("le", &le));
            out.push(series(&l, r));
        }
    }
}
