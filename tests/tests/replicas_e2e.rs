//! Past one replica, end to end: real Envoy 1.40 sidecars (a canary with 20% errors and
//! 120 ms more latency, a clean primary) deliver to two waggle replicas behind one ingest
//! cluster, and each replica remote-writes its share to Prometheus 2.42 and VictoriaMetrics.
//! Flagger's built-in Istio queries asked at each receiver give the canary's known success
//! rate and the same p99 as one waggle that receives every event (a second filter in each
//! sidecar mirrors the traffic to it). Freshness at each receiver is measured and printed.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use waggle::analyze::builtin;
use waggle::analyze::template::{render, Model};
use waggle_tests::canary::{self, Ingest, Load, Runtime, Side};
use waggle_tests::client;
use waggle_tests::prom::{self, Prometheus, Waggle};
use waggle_tests::victoria::{self, VictoriaMetrics};

fn tools() -> Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let found = (
        waggle_tests::envoy::binary(),
        prom::binary(),
        victoria::binary(),
    );
    match found {
        (Some(e), Some(p), Some(v)) => Some((e, p, v)),
        missing => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the replica test (envoy, prometheus, victoria-metrics): {missing:?}"
            );
            eprintln!("skipped: envoy, prometheus or victoria-metrics missing");
            None
        }
    }
}

fn flagger(template: &str) -> String {
    let m = Model {
        name: "podinfo".into(),
        namespace: "test".into(),
        target: "podinfo".into(),
        interval: "1m".into(),
        ..Model::default()
    };
    render(template, &m)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[test]
fn two_replicas_remote_write_what_one_waggle_answers() {
    let Some((envoy, prom_bin, vm_bin)) = tools() else {
        return;
    };
    let p = Prometheus::start(&prom_bin).unwrap();
    let vm = VictoriaMetrics::start(&vm_bin).unwrap();
    let reference = Waggle::start(&[]).unwrap();
    let replica = |name: &str| {
        Waggle::start(&[
            "--remote-write-url",
            &format!("{}/api/v1/write", p.base()),
            "--remote-write-url",
            &vm.write_url(),
            "--external-label",
            &format!("waggle_replica={name}"),
        ])
        .unwrap()
    };
    let (a, b) = (replica("waggle-0"), replica("waggle-1"));
    let ingest = Ingest {
        ports: vec![a.ingest.port(), b.ingest.port()],
        mirror: Some(reference.ingest.port()),
    };
    let runtime = Runtime::Envoy(envoy);
    let wasm = waggle_tests::filter_wasm();
    // Small batches, so that both replicas get a share of every workload's events.
    let config = r#"{"max_batch_events": 20}"#;
    let side = |w: &str, v: &str| {
        Arc::new(Side::start_with(&runtime, w, v, &wasm, &ingest, config).unwrap())
    };
    let (primary, canary) = (side("podinfo-primary", "v1"), side("podinfo", "v2"));
    canary.behaviour.error_percent.store(20, Relaxed);
    canary.behaviour.delay_ms.store(120, Relaxed);
    let weight = Arc::new(AtomicU32::new(50));
    let load = Load::start(primary.clone(), canary.clone(), weight, 60);
    std::thread::sleep(Duration::from_secs(25));
    drop(load);
    // Let the last batches land and the last steps reach both receivers.
    std::thread::sleep(Duration::from_secs(5));

    let success = flagger(builtin::REQUEST_SUCCESS_RATE);
    let p99 = flagger(builtin::REQUEST_DURATION);
    let at = |base: &str, q: &str| client::value(base, q).unwrap_or(f64::NAN);
    let (want_rate, want_p99) = (at(&reference.base(), &success), at(&reference.base(), &p99));
    eprintln!("one waggle: success rate {want_rate:.2}%, p99 {want_p99:.1} ms");
    assert!(
        (want_rate - 80.0).abs() < 1.5,
        "the canary's known 20% errors: {want_rate}"
    );
    assert!(want_p99 > 120.0, "the canary's added latency: {want_p99}");
    for (name, base) in [("Prometheus", p.base()), ("VictoriaMetrics", vm.base())] {
        let (rate, q99) = (at(&base, &success), at(&base, &p99));
        eprintln!("{name}: success rate {rate:.2}%, p99 {q99:.1} ms");
        assert!(
            (rate - want_rate).abs() < 1.5,
            "{name} success rate {rate} vs one waggle's {want_rate}"
        );
        assert!(
            (q99 - want_p99).abs() <= want_p99 * 0.05,
            "{name} p99 {q99} vs one waggle's {want_p99}"
        );
        let replicas = at(
            &base,
            r#"count(count by (waggle_replica) (istio_requests_total{reporter="destination"}))"#,
        );
        assert_eq!(replicas, 2.0, "{name}: both replicas' shares, apart");
        let total = at(
            &base,
            r#"sum(istio_requests_total{reporter="destination"})"#,
        );
        let whole = at(
            &reference.base(),
            r#"sum(istio_requests_total{reporter="destination"})"#,
        );
        assert_eq!(total, whole, "{name}: the shares add up to the whole");
        assert_eq!(
            at(&base, "sum(resets(istio_requests_total[5m]))"),
            0.0,
            "{name}: no counter reset"
        );
    }

    // Freshness at each receiver, from a response to the receiver counting it.
    let probe = Side::start_with(&runtime, "probe", "v1", &wasm, &ingest, "{}").unwrap();
    for (name, base) in [
        ("one waggle", reference.base()),
        ("Prometheus", p.base()),
        ("VictoriaMetrics", vm.base()),
    ] {
        let s = canary::freshness(&probe, &base, 8).unwrap();
        let (p50, p99) = (percentile(s.clone(), 0.5), percentile(s, 0.99));
        eprintln!("freshness at {name}: p50 {p50:.2} s, p99 {p99:.2} s");
        assert!(p99 < 10.0, "{name}");
    }
}
