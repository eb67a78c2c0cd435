//! The Honeycomb query mode against the emulator's Query Data API, which computes answers from
//! the events waggle exported to it: Flagger's checks answered through `/honeycomb` agree with
//! the main engine on the same events, unsupported PromQL is refused by name, and the budget,
//! deadline and key errors are reported as what they are.

use std::time::Duration;

use serde_json::Value;
use waggle_tests::honeycomb::{Emulator, INGEST_KEY, QUERY_KEY};
use waggle_tests::prom::{client, Waggle};
use waggle_wire::{sample, BatchBuilder, Reporter};

fn start(emu: &Emulator, extra: &[&str]) -> Waggle {
    let base = emu.base();
    let mut args = vec![
        "--honeycomb-api-key",
        INGEST_KEY,
        "--honeycomb-base-url",
        base.as_str(),
        "--honeycomb-flush-interval",
        "50ms",
    ];
    if !extra.contains(&"--honeycomb-query-key") {
        args.extend_from_slice(&["--honeycomb-query-key", QUERY_KEY]);
    }
    args.extend_from_slice(extra);
    Waggle::start(&args).expect("waggle")
}

/// 600 requests to `podinfo` in namespace `test` over the last 20 s: 3% 503s, durations from
/// the sample generator. Returns how many there were.
fn traffic(w: &Waggle, emu: &Emulator) -> usize {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let mut events = sample::inbound(600, 21, true);
    let first = events[0].start_unix_us;
    for (i, e) in events.iter_mut().enumerate() {
        e.reporter = Reporter::Destination;
        e.start_unix_us = now_us - 20_000_000 + (e.start_unix_us - first) * 18;
        e.start_unix_us = e.start_unix_us.min(now_us - 1_000_000);
        if i % 33 == 0 {
            e.response_code = 503;
        } else if e.response_code == 503 {
            e.response_code = 200;
            e.response_flags = "-".into();
        }
    }
    let mut header = sample::header(1);
    header.local = sample::workload("podinfo", "test", "podinfo", "v2");
    let mut b = BatchBuilder::new();
    for e in &events {
        b.push(e);
    }
    let r = client()
        .post(format!("{}/v1/events", w.ingest_base()))
        .header("content-type", "application/x-waggle-batch")
        .body(b.finish(&header))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(
        emu.wait_for(events.len(), Duration::from_secs(20)),
        events.len()
    );
    events.len()
}

fn ask(w: &Waggle, path: &str, q: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}{path}", w.base()))
        .query(&[("query", q)])
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn value(v: &Value) -> f64 {
    v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or_else(|| panic!("no value: {v}"))
        .parse()
        .unwrap()
}

const SUCCESS: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo",response_code!~"5.*"}[1m])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo"}[1m])) * 100"#;
const P99: &str = r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo"}[1m])) by (le))"#;
const RATE: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo"}[1m]))"#;

#[test]
fn flaggers_checks_from_honeycomb_agree_with_the_main_engine() {
    let emu = Emulator::start();
    let w = start(&emu, &[]);
    let n = traffic(&w, &emu);
    let errors = (0..n).filter(|i| i % 33 == 0).count();

    let (s, hc) = ask(&w, "/honeycomb/api/v1/query", SUCCESS);
    assert_eq!(s, 200, "{hc}");
    let (_, main) = ask(&w, "/api/v1/query", SUCCESS);
    let exact = 100.0 * (n - errors) as f64 / n as f64;
    assert!(
        (value(&hc) - exact).abs() < 1e-9,
        "Honeycomb counts exactly: {} vs {exact}",
        value(&hc)
    );
    assert!(
        (value(&hc) - value(&main)).abs() < 1.0,
        "{} vs main {}",
        value(&hc),
        value(&main)
    );

    // Honeycomb's percentile is exact; the histogram's is interpolated inside an Envoy bucket,
    // so both must fall in the same bucket.
    let (_, hc) = ask(&w, "/honeycomb/api/v1/query", P99);
    let (_, main) = ask(&w, "/api/v1/query", P99);
    let (h, m) = (value(&hc), value(&main));
    let buckets = waggle::families::ENVOY_BUCKETS;
    let upper = buckets.iter().copied().find(|b| *b >= m).unwrap();
    let lower = buckets
        .iter()
        .copied()
        .rev()
        .find(|b| *b < m)
        .unwrap_or(0.0);
    assert!(
        h > lower && h <= upper,
        "Honeycomb p99 {h} outside the main engine's bucket ({lower}, {upper}] holding {m}"
    );

    let (_, hc) = ask(&w, "/honeycomb/api/v1/query", RATE);
    let (_, main) = ask(&w, "/api/v1/query", RATE);
    assert!(
        (value(&hc) - n as f64 / 60.0).abs() < 1e-9,
        "COUNT over the minute: {}",
        value(&hc)
    );
    let ratio = value(&hc) / value(&main);
    assert!(
        (0.7..1.3).contains(&ratio),
        "rate {} vs main {}",
        value(&hc),
        value(&main)
    );

    // Flagger's online check needs no Honeycomb query.
    let before = emu.query_results_created();
    let (s, one) = ask(&w, "/honeycomb/api/v1/query", "vector(1)");
    assert_eq!((s, value(&one)), (200, 1.0));
    assert_eq!(emu.query_results_created(), before);
    assert_eq!(emu.problems(), Vec::<String>::new());
}

#[test]
fn a_service_without_events_is_no_data_with_a_reason() {
    let emu = Emulator::start();
    let w = start(&emu, &[]);
    traffic(&w, &emu);
    let (s, v) = ask(
        &w,
        "/honeycomb/api/v1/query",
        &SUCCESS.replace("podinfo", "reviews"),
    );
    assert_eq!(s, 200);
    assert_eq!(v["data"]["result"], serde_json::json!([]));
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("has no events matching"),
        "{v}"
    );
}

#[test]
fn unsupported_promql_is_refused_by_name() {
    let emu = Emulator::start();
    let w = start(&emu, &[]);
    for (q, want) in [
        ("sum(irate(istio_requests_total[1m]))", "irate"),
        ("max(rate(istio_requests_total[1m]))", "aggregation max"),
        (
            "sum(rate(istio_requests_total{pod=\"x\"}[1m]))",
            "label \"pod\"",
        ),
        ("istio_requests_total", "bare selector"),
    ] {
        let (s, v) = ask(&w, "/honeycomb/api/v1/query", q);
        assert_eq!(
            (s, v["errorType"].as_str()),
            (400, Some("bad_data")),
            "{q}: {v}"
        );
        assert!(v["error"].as_str().unwrap().contains(want), "{q}: {v}");
    }
    assert_eq!(emu.query_results_created(), 0, "nothing reached Honeycomb");
}

#[test]
fn the_budget_is_kept_and_identical_queries_share_a_result() {
    let emu = Emulator::start();
    let w = start(&emu, &["--honeycomb-query-budget", "2"]);
    traffic(&w, &emu);
    for _ in 0..3 {
        assert_eq!(ask(&w, "/honeycomb/api/v1/query", SUCCESS).0, 200);
    }
    assert_eq!(
        emu.query_results_created(),
        1,
        "one result served three times"
    );
    assert_eq!(ask(&w, "/honeycomb/api/v1/query", P99).0, 200);
    let (s, v) = ask(&w, "/honeycomb/api/v1/query", RATE);
    assert_eq!(
        (s, v["errorType"].as_str()),
        (500, Some("unavailable")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("budget spent"), "{v}");
    assert_eq!(emu.query_results_created(), 2);

    // With a larger budget than Honeycomb allows, Honeycomb's own 429 is reported as such.
    let emu = Emulator::start();
    let w = start(
        &emu,
        &[
            "--honeycomb-query-budget",
            "50",
            "--honeycomb-query-cache-ttl",
            "1ms",
        ],
    );
    let mut last = (0, Value::Null);
    for i in 0..11 {
        last = ask(
            &w,
            "/honeycomb/api/v1/query",
            &RATE.replace("[1m]", &format!("[{}m]", i + 1)),
        );
    }
    assert_eq!(last.0, 500, "{}", last.1);
    assert!(
        last.1["error"].as_str().unwrap().contains("rate-limited"),
        "{}",
        last.1
    );
}

#[test]
fn slow_results_time_out_within_the_deadline() {
    let emu = Emulator::start();
    emu.query_delay(Duration::from_secs(5));
    let w = start(&emu, &["--honeycomb-query-deadline", "800ms"]);
    let t = std::time::Instant::now();
    let (s, v) = ask(&w, "/honeycomb/api/v1/query", RATE);
    assert_eq!((s, v["errorType"].as_str()), (503, Some("timeout")), "{v}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "answered within Flagger's 5 s: {:?}",
        t.elapsed()
    );
}

#[test]
fn key_errors_are_reported_as_key_errors() {
    let emu = Emulator::start();
    let w = start(&emu, &["--honeycomb-query-key", INGEST_KEY]);
    let (s, v) = ask(&w, "/honeycomb/api/v1/query", RATE);
    assert_eq!(s, 500, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("refused the query key (401)"),
        "{v}"
    );
    drop(w);
    emu.add_query_key("cfgkeynoqueries000001", false);
    let w = start(&emu, &["--honeycomb-query-key", "cfgkeynoqueries000001"]);
    let (_, v) = ask(&w, "/honeycomb/api/v1/query", RATE);
    assert!(v["error"].as_str().unwrap().contains("(403)"), "{v}");

    let off = Waggle::start(&[]).unwrap();
    let (s, v) = ask(&off, "/honeycomb/api/v1/query", RATE);
    assert_eq!(s, 500);
    assert!(
        v["error"].as_str().unwrap().contains("query mode is off"),
        "{v}"
    );
}
