//! A canary rollout on one machine: `podinfo-primary` and `podinfo` apps whose errors and
//! latency are set at run time, each behind a sidecar running the real filter `.wasm` (in Envoy
//! when one is available, else in the project's wasmtime host), and a load generator that
//! splits traffic by the weight the analysis loop sets.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::capture::{Received, Reply, Server};
use crate::envoy::{self, Envoy, Sidecar};
use crate::host::CallAnswer;
use crate::istio::{self, PeerForm};
use crate::vm::Vm;

pub const NAMESPACE: &str = "test";
/// What the apps answer with, so a response Envoy made up can be told apart.
const BODY: &str = "podinfo";

/// How an app behaves right now.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Of every 100 requests, this many answer 500.
    pub error_percent: AtomicU32,
    /// Added to every answer.
    pub delay_ms: AtomicU32,
    /// Of every 100 requests, this many are slow: `slow_ms` more (a tail, spread evenly).
    pub slow_percent: AtomicU32,
    pub slow_ms: AtomicU32,
    served: AtomicU64,
}

/// Starts an app; its errors are spread evenly over the requests it serves.
pub fn podinfo(b: Arc<Behaviour>) -> Result<Server> {
    Ok(Server::start(move |_r: &Received| {
        let n = b.served.fetch_add(1, Relaxed);
        let p = u64::from(b.error_percent.load(Relaxed));
        // Error diffusion: exactly p of every 100, spread out (20% fails every fifth).
        let fail = (n + 1) * p / 100 > n * p / 100;
        // Offset so the slow requests are not the failing ones.
        let s = u64::from(b.slow_percent.load(Relaxed));
        let m = n + 50;
        let slow = (m + 1) * s / 100 > m * s / 100;
        let tail = if slow {
            u64::from(b.slow_ms.load(Relaxed))
        } else {
            0
        };
        Reply {
            status: if fail { 500 } else { 200 },
            delay: Duration::from_millis(u64::from(b.delay_ms.load(Relaxed)) + 2 + n % 4 + tail),
            body: BODY.into(),
            hang_up: false,
            headers: Vec::new(),
        }
    })?)
}

/// Where the filter runs.
#[derive(Debug, Clone)]
pub enum Runtime {
    Envoy(PathBuf),
    /// Envoy with sidecars shaped as Kuma dataplanes ([`crate::kuma`]).
    Kuma(PathBuf),
    /// The wasmtime proxy-wasm host, fed each request's attributes after it completes.
    Wasmtime,
}

enum Proxy {
    Envoy {
        envoy: Envoy,
        port: u16,
    },
    Wasm {
        tx: Mutex<mpsc::Sender<istio::Request>>,
        app_port: u16,
    },
}

/// One workload: its app and its sidecar.
pub struct Side {
    pub workload: String,
    pub behaviour: Arc<Behaviour>,
    _app: Server,
    proxy: Proxy,
}

/// Where a sidecar's filter delivers: the ingest cluster's endpoints, and optionally a second
/// filter's own backend (Envoy only).
#[derive(Debug, Clone, Default)]
pub struct Ingest {
    pub ports: Vec<u16>,
    pub mirror: Option<u16>,
}

impl Side {
    pub fn start(
        runtime: &Runtime,
        workload: &str,
        version: &str,
        wasm: &Path,
        ingest_port: u16,
        plugin_config: &str,
    ) -> Result<Self> {
        let ingest = Ingest {
            ports: vec![ingest_port],
            mirror: None,
        };
        Self::start_with(runtime, workload, version, wasm, &ingest, plugin_config)
    }

    /// [`Side::start`] delivering to several endpoints (and a mirror).
    pub fn start_with(
        runtime: &Runtime,
        workload: &str,
        version: &str,
        wasm: &Path,
        ingest: &Ingest,
        plugin_config: &str,
    ) -> Result<Self> {
        let ingest_port = ingest.ports.first().copied().unwrap_or(0);
        let behaviour = Arc::new(Behaviour::default());
        let app = podinfo(behaviour.clone())?;
        let proxy = match runtime {
            Runtime::Envoy(bin) => {
                let spec = Sidecar {
                    workload: workload.into(),
                    namespace: NAMESPACE.into(),
                    app: "podinfo".into(),
                    version: version.into(),
                    listen_port: envoy::free_port(),
                    app_port: app.port(),
                    ingest_port: ingest.ports.first().copied().unwrap_or(0),
                    more_ingest_ports: ingest.ports.iter().skip(1).copied().collect(),
                    mirror_port: ingest.mirror,
                    admin_port: envoy::free_port(),
                    wasm: wasm.to_path_buf(),
                    plugin_config: plugin_config.into(),
                };
                let envoy = Envoy::start(bin, &spec.bootstrap(), spec.admin_port)?;
                Proxy::Envoy {
                    envoy,
                    port: spec.listen_port,
                }
            }
            Runtime::Kuma(bin) => {
                let dp = kuma_dataplane(
                    workload,
                    version,
                    app.port(),
                    ingest_port,
                    wasm,
                    plugin_config,
                );
                let envoy = Envoy::start(bin, &dp.bootstrap(), dp.admin_port)?;
                Proxy::Envoy {
                    envoy,
                    port: dp.listen_port,
                }
            }
            Runtime::Wasmtime => {
                let tx = wasm_sidecar(wasm, workload, version, ingest_port, plugin_config)?;
                Proxy::Wasm {
                    tx: Mutex::new(tx),
                    app_port: app.port(),
                }
            }
        };
        Ok(Self {
            workload: workload.into(),
            behaviour,
            _app: app,
            proxy,
        })
    }

    /// One request through the sidecar: (status, whether the app itself answered).
    pub fn request(&self, path: &str) -> (u16, bool) {
        match &self.proxy {
            Proxy::Envoy { port, .. } => match envoy::request(*port, "GET", path, &[]) {
                Ok((status, body)) => (status, body == BODY),
                Err(_) => (0, false),
            },
            Proxy::Wasm { tx, app_port } => {
                let start = now_ns();
                let t = Instant::now();
                let (status, from_app) = match envoy::request(*app_port, "GET", path, &[]) {
                    Ok((s, body)) => (s, body == BODY),
                    Err(_) => (0, false),
                };
                let req = istio::Request {
                    inbound: true,
                    start_unix_ns: start,
                    duration_ns: t.elapsed().as_nanos() as u64,
                    code: status,
                    peer: [
                        "loadtester",
                        NAMESPACE,
                        "loadtester",
                        "v1",
                        "loadtester",
                        "v1",
                        "Kubernetes",
                    ]
                    .map(String::from),
                    peer_form: PeerForm::Object,
                    peer_principal: Some(format!(
                        "spiffe://cluster.local/ns/{NAMESPACE}/sa/loadtester"
                    )),
                    local_principal: Some(format!(
                        "spiffe://cluster.local/ns/{NAMESPACE}/sa/podinfo"
                    )),
                    host: format!("podinfo.{NAMESPACE}:9898"),
                    service: Some((
                        format!("podinfo.{NAMESPACE}.svc.cluster.local"),
                        "podinfo".into(),
                        NAMESPACE.into(),
                    )),
                    path: path.into(),
                    ..istio::Request::default()
                };
                if let Ok(tx) = tx.lock() {
                    let _ = tx.send(req);
                }
                (status, from_app)
            }
        }
    }

    /// True while the sidecar process (if any) is alive and ready.
    pub fn proxy_alive(&self) -> bool {
        match &self.proxy {
            Proxy::Envoy { envoy, .. } => {
                envoy::get(envoy.admin_port, "/ready").is_ok_and(|(s, _)| s == 200)
            }
            Proxy::Wasm { .. } => true,
        }
    }

    pub fn proxy_log(&self) -> String {
        match &self.proxy {
            Proxy::Envoy { envoy, .. } => envoy.log_text(),
            Proxy::Wasm { .. } => String::new(),
        }
    }
}

/// A Kuma dataplane for a Flagger workload: the primary Deployment `<target>-primary` is behind
/// the Service of the same name, the canary Deployment `<target>` behind `<target>-canary`.
pub fn kuma_dataplane(
    workload: &str,
    version: &str,
    app_port: u16,
    ingest_port: u16,
    wasm: &Path,
    plugin_config: &str,
) -> crate::kuma::Dataplane {
    let service = if workload.ends_with("-primary") {
        workload.to_owned()
    } else {
        format!("{workload}-canary")
    };
    crate::kuma::Dataplane {
        mesh: "default".into(),
        pod: format!("{workload}-7d9f8b6c5-{}", &version.replace('.', "")),
        namespace: NAMESPACE.into(),
        service: crate::kuma::service_tag(&service, NAMESPACE, 9898),
        zone: "zone-1".into(),
        app: workload.into(),
        version: version.into(),
        listen_port: envoy::free_port(),
        app_port,
        admin_port: envoy::free_port(),
        ingest_port,
        outbound: Vec::new(),
        wasm: wasm.to_path_buf(),
        plugin_config: plugin_config.into(),
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs the filter in a wasmtime VM on its own thread, on the wall clock: each finished request
/// goes through the filter's callbacks, and its calls to the ingest cluster become real HTTP
/// requests to the backend, answered back into the VM with their status.
fn wasm_sidecar(
    wasm: &Path,
    workload: &str,
    version: &str,
    ingest_port: u16,
    plugin_config: &str,
) -> Result<mpsc::Sender<istio::Request>> {
    let (tx, rx) = mpsc::channel::<istio::Request>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
    let (wasm, workload, version, config) = (
        wasm.to_path_buf(),
        workload.to_owned(),
        version.to_owned(),
        plugin_config.to_owned(),
    );
    std::thread::Builder::new()
        .name(format!("wasm-{workload}"))
        .spawn(move || {
            let setup = || -> Result<Vm> {
                let mut vm = Vm::from_file(&wasm)?;
                istio::set_node(&mut vm, &workload, NAMESPACE, "podinfo", &version, false);
                vm.state_mut().now_ns = now_ns();
                if !vm.start(&config)? {
                    anyhow::bail!("the filter refused its configuration: {:?}", vm.logs());
                }
                Ok(vm)
            };
            let mut vm = match setup() {
                Ok(vm) => {
                    let _ = ready_tx.send(Ok(()));
                    vm
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            loop {
                match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(req) => {
                        if req.run(&mut vm).is_err() {
                            return;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                let behind = now_ns().saturating_sub(vm.now_ns()) / 1_000_000;
                if behind > 0 && vm.advance_ms(behind).is_err() {
                    return;
                }
                for call in vm.pending_calls().to_vec() {
                    let path = call.header(":path").unwrap_or("/v1/events").to_owned();
                    let mut req = http
                        .post(format!("http://127.0.0.1:{ingest_port}{path}"))
                        .body(call.body.clone());
                    for (k, v) in &call.headers {
                        if !k.starts_with(':') {
                            req = req.header(k.as_str(), v.as_str());
                        }
                    }
                    let answer = match req.send() {
                        Ok(r) => CallAnswer::Status(r.status().as_u16()),
                        Err(_) => CallAnswer::Failure,
                    };
                    if vm.answer(call.token, answer).is_err() {
                        return;
                    }
                }
            }
        })?;
    ready_rx.recv().context("the wasm sidecar thread died")??;
    Ok(tx)
}

/// What the load generator saw.
#[derive(Debug, Default)]
pub struct LoadStats {
    pub primary: AtomicU64,
    pub canary: AtomicU64,
    /// Answers the apps did not make (Envoy errors, failed connections): must stay 0.
    pub not_from_app: AtomicU64,
}

/// Sends `rps` requests per second split by `weight` (the canary's percent), until dropped.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub stats: Arc<LoadStats>,
    /// While set, the canary gets nothing whatever the weight (a broken route).
    pub canary_off: Arc<AtomicBool>,
    pub paused: Arc<AtomicBool>,
}

impl Load {
    pub fn start(primary: Arc<Side>, canary: Arc<Side>, weight: Arc<AtomicU32>, rps: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LoadStats::default());
        let canary_off = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let counter = Arc::new(AtomicU64::new(0));
        let workers = 4;
        let gap = Duration::from_secs_f64(f64::from(workers) / f64::from(rps.max(1)));
        let threads = (0..workers)
            .map(|_| {
                let (stop, stats, off, paused, counter) = (
                    stop.clone(),
                    stats.clone(),
                    canary_off.clone(),
                    paused.clone(),
                    counter.clone(),
                );
                let (p, c, w) = (primary.clone(), canary.clone(), weight.clone());
                std::thread::spawn(move || {
                    let mut next = Instant::now();
                    while !stop.load(Relaxed) {
                        next += gap;
                        if !paused.load(Relaxed) {
                            let n = counter.fetch_add(1, Relaxed);
                            let to_canary =
                                !off.load(Relaxed) && (n % 100) < u64::from(w.load(Relaxed));
                            let side = if to_canary { &c } else { &p };
                            let (_, from_app) = side.request(&format!("/api/info?n={n}"));
                            let counter = if to_canary {
                                &stats.canary
                            } else {
                                &stats.primary
                            };
                            counter.fetch_add(1, Relaxed);
                            if !from_app {
                                stats.not_from_app.fetch_add(1, Relaxed);
                            }
                        }
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else {
                            next = now;
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            threads,
            stats,
            canary_off,
            paused,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The example Canary the demo and the end-to-end tests analyse.
pub const CANARY: &str = include_str!("../../istio/examples/podinfo-canary.yaml");

/// Freshness: sends one request at a time through `side` and measures, from the moment its
/// response arrives, how long until a query on `base` counts it. Returns seconds per request.
pub fn freshness(side: &Side, base: &str, samples: usize) -> Result<Vec<f64>> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let q = format!(
        "sum(istio_requests_total{{reporter=\"destination\",destination_workload=\"{}\"}})",
        side.workload
    );
    let count = || -> f64 {
        http.get(format!("{base}/api/v1/query"))
            .query(&[("query", q.as_str())])
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
            .ok()
            .and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
            })
            .unwrap_or(0.0)
    };
    let mut out = Vec::with_capacity(samples);
    // Counted against the total so far, not the count just before: a receiver that lags
    // behind must not pass off the previous request's arrival as this one's.
    let start = count();
    for i in 0..samples {
        side.request(&format!("/fresh/{i}"));
        let t = Instant::now();
        loop {
            if count() >= start + (i + 1) as f64 {
                out.push(t.elapsed().as_secs_f64());
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("request {i} was not counted within 10 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Spread the samples over the flush cycle.
        std::thread::sleep(Duration::from_millis(37 + (i as u64 * 53) % 211));
    }
    Ok(out)
}
