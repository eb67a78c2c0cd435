//! `waggle serve` over HTTP: ingest that refuses bad input without losing anything, the
//! Prometheus envelope and parameter errors, and `promtool` as a real client.

#![allow(clippy::type_complexity)] // case tables read best as inline tuples

use std::process::Command;

use serde_json::Value;
use waggle::api::ingest::{RwLabel, RwSample, RwTimeSeries, WriteRequest};
use waggle_tests::prom::{self, Waggle};
use waggle_wire::{sample, BatchBuilder};

const TOKEN: &str = "test-token-123";

fn waggle() -> Waggle {
    Waggle::start(&[
        "--ingest-token",
        TOKEN,
        "--max-body-bytes",
        "65536",
        "--retention",
        "1h",
    ])
    .unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A batch of `n` inbound events that ended in the last second.
fn batch(n: usize, seq: u64) -> Vec<u8> {
    let mut events = sample::inbound(n, seq + 1, true);
    let base = events[0].start_unix_us;
    let now_us = now_ms() as u64 * 1000 - 1_000_000;
    for e in &mut events {
        e.start_unix_us = now_us + (e.start_unix_us - base) / 1000;
        e.duration_us = e.duration_us.min(100_000);
    }
    let mut b = BatchBuilder::new();
    for e in &events {
        b.push(e);
    }
    b.finish(&sample::header(seq))
}

fn post(
    w: &Waggle,
    path: &str,
    body: Vec<u8>,
    content_type: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = prom::client()
        .post(format!("{}{path}", w.ingest_base()))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn instant(w: &Waggle, q: &str) -> Value {
    prom::client()
        .get(format!("{}/api/v1/query", w.base()))
        .query(&[("query", q)])
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn total_requests(w: &Waggle) -> f64 {
    let v = instant(w, "sum(istio_requests_total)");
    v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap()
}

fn rw_body(series: Vec<RwTimeSeries>) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&prost::Message::encode_to_vec(&WriteRequest {
            timeseries: series,
        }))
        .unwrap()
}

fn ts(name: &str, extra: &[(&str, &str)], samples: &[(i64, f64)]) -> RwTimeSeries {
    let mut labels = vec![RwLabel {
        name: "__name__".into(),
        value: name.into(),
    }];
    labels.extend(extra.iter().map(|(n, v)| RwLabel {
        name: n.to_string(),
        value: v.to_string(),
    }));
    RwTimeSeries {
        labels,
        samples: samples
            .iter()
            .map(|&(timestamp, value)| RwSample { value, timestamp })
            .collect(),
    }
}

#[test]
fn bad_event_batches_are_refused_and_lose_nothing() {
    let w = waggle();
    let (status, _) = post(
        &w,
        "/v1/events",
        batch(100, 0),
        waggle_wire::CONTENT_TYPE,
        Some(TOKEN),
    );
    assert_eq!(status, 202);
    assert_eq!(total_requests(&w), 100.0);

    let good = batch(50, 1);
    let cases: Vec<(&str, Vec<u8>, &str, Option<&str>, u16, &str)> = vec![
        (
            "no token",
            good.clone(),
            waggle_wire::CONTENT_TYPE,
            None,
            401,
            "missing bearer token",
        ),
        (
            "wrong token",
            good.clone(),
            waggle_wire::CONTENT_TYPE,
            Some("nope"),
            401,
            "wrong bearer token",
        ),
        (
            "garbage",
            b"hello".to_vec(),
            waggle_wire::CONTENT_TYPE,
            Some(TOKEN),
            400,
            "magic bytes",
        ),
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            waggle_wire::CONTENT_TYPE,
            Some(TOKEN),
            400,
            "truncated",
        ),
        (
            "empty",
            Vec::new(),
            waggle_wire::CONTENT_TYPE,
            Some(TOKEN),
            400,
            "magic",
        ),
        (
            "oversized",
            vec![0u8; 70_000],
            waggle_wire::CONTENT_TYPE,
            Some(TOKEN),
            413,
            "exceeds the limit of 65536 bytes",
        ),
        (
            "bad json",
            b"[{\"workload\":1}]".to_vec(),
            "application/json",
            Some(TOKEN),
            400,
            "malformed JSON events",
        ),
        (
            "json field",
            br#"[{"workload":"a","namespace":"b","response_code":200,"duration_ms":-1}]"#.to_vec(),
            "application/json",
            Some(TOKEN),
            400,
            "duration_ms",
        ),
    ];
    for (name, body, ct, token, want_status, want_msg) in cases {
        let (status, v) = post(&w, "/v1/events", body, ct, token);
        assert_eq!(status, want_status, "{name}: {v}");
        assert_eq!(v["status"], "error", "{name}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(want_msg), "{name}: {msg}");
    }
    assert_eq!(total_requests(&w), 100.0, "nothing stored changed");

    let (status, _) = post(
        &w,
        "/v1/events",
        br#"[{"workload":"podinfo","namespace":"test","response_code":503,"duration_ms":12.5}]"#
            .to_vec(),
        "application/json",
        Some(TOKEN),
    );
    assert_eq!(status, 202, "the JSON shape works");
    let v = instant(
        &w,
        r#"sum(istio_requests_total{destination_workload="podinfo",response_code="503"})"#,
    );
    assert_eq!(v["data"]["result"][0]["value"][1], "1");

    let metrics = prom::client()
        .get(format!("{}/metrics", w.base()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "waggle_ingest_rejected_total{endpoint=\"events\",reason=\"unauthorized\"} 2",
        "waggle_ingest_rejected_total{endpoint=\"events\",reason=\"malformed\"} 5",
        "waggle_ingest_rejected_total{endpoint=\"events\",reason=\"too_large\"} 1",
        "waggle_events_ingested_total 101",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[test]
fn remote_write_is_all_or_nothing_and_stores_samples_exactly() {
    let w = waggle();
    let now = now_ms();
    let ok = rw_body(vec![ts(
        "checkout_orders_total",
        &[("shop", "eu")],
        &[(now - 2000, 5.0), (now - 1000, 7.25)],
    )]);
    assert_eq!(
        post(
            &w,
            "/api/v1/write",
            ok,
            "application/x-protobuf",
            Some(TOKEN)
        )
        .0,
        204
    );
    let q = |q: &str| {
        prom::client()
            .get(format!("{}/api/v1/query_range", w.base()))
            .query(&[
                ("query", q),
                ("start", &format!("{}", (now - 2000) as f64 / 1000.0)),
                ("end", &format!("{}", (now - 1000) as f64 / 1000.0)),
                ("step", "1"),
            ])
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()
    };
    let v = q("checkout_orders_total");
    assert_eq!(v["data"]["result"][0]["values"][0][1], "5");
    assert_eq!(
        v["data"]["result"][0]["values"][1][1], "7.25",
        "values as written"
    );

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not snappy", b"plain".to_vec(), "snappy"),
        (
            "not protobuf",
            snap::raw::Encoder::new()
                .compress_vec(b"\xff\xff\xff")
                .unwrap(),
            "protobuf",
        ),
        (
            "bad label",
            rw_body(vec![ts("x", &[("1bad", "v")], &[(now, 1.0)])]),
            "invalid label name",
        ),
        (
            "bad name",
            rw_body(vec![ts("9x", &[], &[(now, 1.0)])]),
            "invalid metric name",
        ),
        (
            "unordered",
            rw_body(vec![ts("x", &[], &[(now, 1.0), (now - 5, 1.0)])]),
            "increasing timestamp order",
        ),
        (
            "out of order against the store, with a good series first",
            rw_body(vec![
                ts("other_total", &[], &[(now, 1.0)]),
                ts(
                    "checkout_orders_total",
                    &[("shop", "eu")],
                    &[(now - 5000, 1.0)],
                ),
            ]),
            "out of order sample",
        ),
        (
            "too old",
            rw_body(vec![ts("x", &[], &[(now - 7_200_000, 1.0)])]),
            "older than the retention",
        ),
    ];
    for (name, body, want) in cases {
        let (status, v) = post(
            &w,
            "/api/v1/write",
            body,
            "application/x-protobuf",
            Some(TOKEN),
        );
        assert_eq!(status, 400, "{name}: {v}");
        assert!(
            v["error"].as_str().unwrap_or_default().contains(want),
            "{name}: {v}"
        );
    }
    assert_eq!(
        post(
            &w,
            "/api/v1/write",
            rw_body(vec![]),
            "application/x-protobuf",
            None
        )
        .0,
        401
    );
    let v = instant(&w, "other_total");
    assert_eq!(
        v["data"]["result"].as_array().unwrap().len(),
        0,
        "a refused request stores nothing: {v}"
    );
    assert_eq!(
        q("checkout_orders_total")["data"]["result"][0]["values"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Remote-written business metrics combine with mesh metrics in one query.
    post(
        &w,
        "/v1/events",
        batch(20, 7),
        waggle_wire::CONTENT_TYPE,
        Some(TOKEN),
    );
    let v = instant(&w, "sum(checkout_orders_total) / sum(istio_requests_total)");
    assert_eq!(v["data"]["result"][0]["value"][1], "0.3625");
}

/// Parameter errors carry Prometheus's status, errorType and wording.
#[test]
fn api_errors_match_prometheus() {
    let w = waggle();
    let cases: Vec<(&str, Vec<(&str, &str)>, u16, &str)> = vec![
        ("query", vec![], 400, "invalid parameter \"query\": 1:1: parse error: no expression found in input"),
        ("query", vec![("query", "up"), ("time", "x")], 400, "invalid parameter \"time\": cannot parse \"x\" to a valid timestamp"),
        ("query", vec![("query", "sum(")], 400, "invalid parameter \"query\": 1:5: parse error: unclosed left parenthesis"),
        ("query", vec![("query", "foo(1)")], 400, "invalid parameter \"query\": 1:1: parse error: unknown function with name \"foo\""),
        ("query_range", vec![("query", "up"), ("start", "10"), ("end", "5"), ("step", "1")], 400, "invalid parameter \"end\": end timestamp must not be before start time"),
        ("query_range", vec![("query", "up"), ("start", "1"), ("end", "5"), ("step", "0")], 400, "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer"),
        ("query_range", vec![("query", "up"), ("start", "1"), ("end", "5")], 400, "invalid parameter \"step\""),
        ("query_range", vec![("query", "up"), ("start", "0"), ("end", "100000"), ("step", "1")], 400, "exceeded maximum resolution of 11,000 points per timeseries"),
        ("query_range", vec![("query", "up[5m]"), ("start", "0"), ("end", "10"), ("step", "1")], 400, "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"),
        ("series", vec![], 400, "no match[] parameter provided"),
        ("label/1bad/values", vec![], 400, "invalid label name: \"1bad\""),
        ("query", vec![("query", "vector(1) + on(a) group_left vector(1) * on(b) vector(1)")], 200, ""),
    ];
    for (path, params, want_status, want) in cases {
        let resp = prom::client()
            .get(format!("{}/api/v1/{path}", w.base()))
            .query(&params)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().unwrap();
        assert_eq!(status, want_status, "{path} {params:?}: {v}");
        if want_status != 200 {
            assert_eq!(v["status"], "error");
            assert_eq!(v["errorType"], "bad_data");
            assert!(
                v["error"].as_str().unwrap().starts_with(want),
                "{path} {params:?}: {v}"
            );
        }
    }
    let v: Value = prom::client()
        .get(format!("{}/api/v1/status/buildinfo", w.base()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["data"]["version"], "2.42.0");
    let health = prom::client()
        .get(format!("{}/-/healthy", w.base()))
        .send()
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = prom::client()
        .get(format!("{}/-/ready", w.base()))
        .send()
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
}

/// Flagger's "no values found" becomes a warning that names the cause.
#[test]
fn empty_results_explain_themselves() {
    let w = waggle();
    post(
        &w,
        "/v1/events",
        batch(30, 3),
        waggle_wire::CONTENT_TYPE,
        Some(TOKEN),
    );
    let q = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="bookinfo",destination_workload=~"reviews-v2"}[1m]))"#;
    let v = instant(&w, q);
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 0);
    let warning = v["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("destination_workload=~\"reviews-v2\""),
        "{warning}"
    );
    assert!(
        warning.contains("\"reviews-v1\""),
        "names the value that exists: {warning}"
    );
}

#[test]
fn promtool_queries_waggle() {
    let Some(promtool) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    }) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run promtool (Debian's prometheus package)"
        );
        eprintln!("SKIPPED: promtool not found");
        return;
    };
    let w = waggle();
    post(
        &w,
        "/v1/events",
        batch(40, 5),
        waggle_wire::CONTENT_TYPE,
        Some(TOKEN),
    );
    let run = |args: &[&str]| {
        let out = Command::new(&promtool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run(&["query", "instant", &w.base(), "sum(istio_requests_total)"]);
    assert!(out.contains("=> 40 @["), "{out}");
    let now = now_ms() / 1000;
    let out = run(&[
        "query",
        "range",
        "--start",
        &(now - 30).to_string(),
        "--end",
        &now.to_string(),
        "--step",
        "5s",
        &w.base(),
        "vector(2)",
    ]);
    assert!(out.contains("2 @["), "{out}");
    assert!(
        out.lines().filter(|l| l.contains(" @[")).count() >= 6,
        "{out}"
    );
}

/// `/flagger`: the same answers, except that an empty result is an `execution` error whose
/// text is the reason (what Flagger prints in its event); `/api/v1` is unchanged.
#[test]
fn the_flagger_prefix_answers_an_empty_result_with_its_reason() {
    let w = waggle();
    post(
        &w,
        "/v1/events",
        batch(30, 3),
        waggle_wire::CONTENT_TYPE,
        Some(TOKEN),
    );
    let get = |path: &str, q: &str| {
        let r = prom::client()
            .get(format!("{}{path}", w.base()))
            .query(&[("query", q)])
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let empty = r#"sum(rate(istio_requests_total{destination_workload=~"reviews-v2"}[1m]))"#;
    let (status, v) = get("/flagger/api/v1/query", empty);
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["errorType"], "execution");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("destination_workload=~\"reviews-v2\"") && error.contains("\"reviews-v1\""),
        "{error}"
    );
    let (status, v) = get("/api/v1/query", empty);
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("success")),
        "/api/v1 answers as Prometheus"
    );
    let full = "sum(istio_requests_total)";
    let (a, b) = (
        get("/flagger/api/v1/query", full),
        get("/api/v1/query", full),
    );
    assert_eq!(a.0, 200);
    assert_eq!(
        a.1["data"]["result"][0]["value"][1],
        b.1["data"]["result"][0]["value"][1]
    );
    // As Flagger's provider reads it: an error response whose body carries the reason.
    let p = waggle::analyze::provider::Prometheus::new().unwrap();
    match p.query(&format!("{}/flagger", w.base()), empty) {
        Err(waggle::analyze::provider::QueryError::Status { status: 422, body }) => {
            assert!(body.contains("reviews-v1"), "{body}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        p.query(&format!("{}/flagger", w.base()), "vector(1)"),
        Ok(1.0),
        "Flagger's online check"
    );
}
