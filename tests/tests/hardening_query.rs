//! The query side under hostile input: no query can crash the process, hold up ingest,
//! health or other queries, outgrow its sample budget, or overflow a time computation.

use std::time::{Duration, Instant};

use waggle::promql::depth::MAX_DEPTH;
use waggle_tests::client::{self, now_ms, post, query, recent, wire, JSON, WIRE};
use waggle_tests::prom::Waggle;
use waggle_wire::sample;

/// A few seconds of inbound traffic for `reviews-v1`.
fn traffic(w: &Waggle) {
    for seq in 0..3 {
        let events = recent(sample::inbound(200, seq + 1, false));
        let (status, v) = post(
            &w.ingest_base(),
            "/v1/events",
            wire(&events, &sample::header(seq)),
            &[WIRE],
        );
        assert_eq!(status, 202, "{v}");
    }
}

fn healthy(w: &Waggle) -> bool {
    waggle_tests::prom::client()
        .get(format!("{}/-/healthy", w.base()))
        .send()
        .is_ok_and(|r| r.status() == 200)
}

#[test]
fn nesting_is_evaluated_up_to_the_bound_and_refused_beyond_it_never_crashing() {
    let w = Waggle::start(&[]).unwrap();
    traffic(&w);
    let base = w.base();
    let total = client::value(&base, "sum(istio_requests_total)").unwrap();
    // Each form nested so its bound is exactly MAX_DEPTH (accepted), then one more (refused).
    type Form = (
        &'static str,
        fn(usize) -> String,
        Option<fn(usize, f64) -> f64>,
    );
    let forms: [Form; 6] = [
        (
            "abs",
            |n| {
                format!(
                    "{}sum(istio_requests_total){}",
                    "abs(".repeat(n - 1),
                    ")".repeat(n - 1)
                )
            },
            Some(|_, t| t),
        ),
        (
            "sum",
            |n| format!("{}istio_requests_total{}", "sum(".repeat(n), ")".repeat(n)),
            Some(|_, t| t),
        ),
        (
            "a chain of 1+",
            |n| format!("{}1", "1+".repeat(n)),
            Some(|n, _| (n + 1) as f64),
        ),
        (
            "parentheses",
            |n| format!("{}7{}", "(".repeat(n), ")".repeat(n)),
            Some(|_, _| 7.0),
        ),
        (
            "unary minus",
            |n| format!("{}1", "-".repeat(n)),
            Some(|n, _| if n % 2 == 0 { 1.0 } else { -1.0 }),
        ),
        (
            "an empty selector",
            |n| format!("{}nothing_here{}", "abs(".repeat(n), ")".repeat(n)),
            None,
        ),
    ];
    for (name, make, want) in forms {
        // The largest n whose bound is MAX_DEPTH: bound(make(n)) == n + 1 for these forms.
        let n = MAX_DEPTH - 1;
        let q = make(n);
        assert_eq!(waggle::promql::depth::bound(&q), MAX_DEPTH, "{name}");
        let (status, v) = query(&base, &q, &[]);
        assert_eq!(status, 200, "{name} at the bound: {v}");
        match want {
            Some(f) => {
                let got: f64 = v["data"]["result"][0]["value"][1]
                    .as_str()
                    .or(v["data"]["result"][1].as_str())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("{name}: {v}"));
                assert_eq!(got, f(n, total), "{name}");
            }
            None => assert!(
                v["warnings"][0]
                    .as_str()
                    .unwrap_or("")
                    .contains("nothing_here"),
                "{name}: the explanation walked the tree: {v}"
            ),
        }
        for deeper in [n + 1, 50_000] {
            let (status, v) = query(&base, &make(deeper), &[]);
            assert_eq!(status, 400, "{name} nested {deeper}: {v}");
            assert_eq!(v["errorType"], "bad_data");
            assert!(
                v["error"].as_str().unwrap().contains("nested too deeply"),
                "{v}"
            );
        }
    }
    // The same guard on every endpoint that parses.
    let deep = format!("{}x{}", "(".repeat(100_000), ")".repeat(100_000));
    let resp = waggle_tests::prom::client()
        .post(format!("{base}/api/v1/series"))
        .form(&[("match[]", deep.as_str())])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = waggle_tests::prom::client()
        .post(format!("{base}/api/v1/query_range"))
        .form(&[
            ("query", deep.as_str()),
            ("start", "0"),
            ("end", "10"),
            ("step", "1"),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(healthy(&w), "still serving");
}

/// A query that evaluates for several seconds: a million subquery steps over a selector.
const SLOW: &str = "count_over_time(sum(istio_requests_total)[1h:1ms])";

#[test]
fn a_slow_query_holds_up_nothing_else() {
    let w = Waggle::start(&[]).unwrap();
    traffic(&w);
    let base = w.base();
    let slow = {
        let base = base.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let (status, _) = query(&base, SLOW, &[("timeout", "20s")]);
            (status, t.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    let mut seq = 100;
    let started = Instant::now();
    while !slow.is_finished() && started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let events = recent(sample::inbound(20, seq, false));
        let (status, _) = post(
            &w.ingest_base(),
            "/v1/events",
            wire(&events, &sample::header(seq)),
            &[WIRE],
        );
        assert_eq!(status, 202);
        assert!(healthy(&w));
        let (status, v) = query(
            &base,
            r#"sum(rate(istio_requests_total{reporter="destination"}[1m]))"#,
            &[],
        );
        assert_eq!(status, 200, "{v}");
        worst = worst.max(t.elapsed());
        seq += 1;
    }
    // Before the store's lock was sliced, each of these waited for the whole slow query.
    assert!(
        worst < Duration::from_secs(2),
        "ingest, health and Flagger's query took {worst:?} beside a slow query"
    );
    assert!(
        !slow.is_finished(),
        "the slow query must still run for the test to mean anything"
    );
    let (status, took) = slow.join().unwrap();
    assert!(status == 200 || status == 503, "{status} after {took:?}");
}

#[test]
fn a_batch_of_new_shapes_holds_up_no_query() {
    let w = Waggle::start(&[]).unwrap();
    traffic(&w);
    let base = w.base();
    // Thousands of request shapes in one batch, every one new: about 100,000 new series.
    let mut events = recent(sample::inbound(1500, 9, false));
    for (i, e) in events.iter_mut().enumerate() {
        e.peer.workload = format!("caller-{i}");
    }
    let body = wire(&events, &sample::header(50));
    let ingest = {
        let base = w.ingest_base();
        std::thread::spawn(move || {
            let t = Instant::now();
            let (status, v) = post(&base, "/v1/events", body, &[WIRE]);
            (status, v, t.elapsed())
        })
    };
    let mut worst = Duration::ZERO;
    let mut during = 0;
    while !ingest.is_finished() {
        let t = Instant::now();
        let (status, _) = query(
            &base,
            r#"sum(istio_requests_total{reporter="destination"})"#,
            &[],
        );
        assert_eq!(status, 200);
        worst = worst.max(t.elapsed());
        during += 1;
    }
    let (status, v, took) = ingest.join().unwrap();
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["accepted"], 1500);
    assert!(
        during >= 3,
        "only {during} queries ran during a {took:?} ingest"
    );
    assert!(
        worst < Duration::from_secs(1),
        "a query waited {worst:?} for a {took:?} ingest"
    );

    let more = recent(sample::inbound(
        waggle_wire::MAX_BATCH_RECORDS + 1,
        10,
        false,
    ));
    let (status, v) = post(
        &w.ingest_base(),
        "/v1/events",
        wire(&more, &sample::header(51)),
        &[WIRE],
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("at most 10000"),
        "{v}"
    );
}

#[test]
fn explanations_keep_to_the_deadline_and_a_work_budget() {
    let w = Waggle::start(&[]).unwrap();
    let now = now_ms();
    // 4,000 series whose values are 2,000 characters long: comparing them all with a
    // 2,000-character matcher value is 16 billion edit-distance cells.
    let long = "v".repeat(2000);
    for chunk in 0..8 {
        let series = (0..500)
            .map(|i| {
                client::ts(
                    "kpi",
                    &[("tag", &format!("{}{:04}", long, chunk * 500 + i))],
                    &[(now - 1000, 1.0)],
                )
            })
            .collect();
        let (status, v) = post(
            &w.ingest_base(),
            "/api/v1/write",
            client::rw_body(series),
            &[client::PROTOBUF],
        );
        assert_eq!(status, 204, "{v}");
    }
    let t = Instant::now();
    let wanted = format!("kpi{{tag=\"{}x\"}}", "w".repeat(2000));
    let (status, v) = query(&w.base(), &wanted, &[("timeout", "1s")]);
    let took = t.elapsed();
    assert_eq!(status, 200, "{v}");
    let warning = v["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("4000 series match everything but tag="),
        "{warning}"
    );
    assert!(
        warning.contains("budget is spent"),
        "the reason says it was cut short: {warning}"
    );
    assert!(
        took < Duration::from_secs(4),
        "the explanation took {took:?} for a 1 s query"
    );
}

#[test]
fn materialised_points_count_against_the_sample_limit() {
    let w = Waggle::start(&["--query-max-samples", "100000"]).unwrap();
    let base = w.base();
    for q in [
        "max_over_time(vector(1)[100y:1ms])",
        "count_over_time((max_over_time(vector(1)[1h:1ms]))[1m:1s])",
    ] {
        let t = Instant::now();
        let (status, v) = query(&base, q, &[]);
        assert_eq!(status, 422, "{q}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("too many samples"),
            "{v}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{q} took {:?}",
            t.elapsed()
        );
    }
    let resp = waggle_tests::prom::client()
        .get(format!("{base}/api/v1/query_range"))
        .query(&[
            ("query", "vector(1)"),
            ("start", "0"),
            ("end", "10999"),
            ("step", "0.1"),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400, "more than 11,000 points");
    let resp = waggle_tests::prom::client()
        .get(format!("{base}/api/v1/query_range"))
        .query(&[
            ("query", "vector(1)"),
            ("start", "0"),
            ("end", "10999"),
            ("step", "1"),
        ])
        .send()
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "11,000 points are within the limit"
    );
}

#[test]
fn range_parameters_never_overflow() {
    let w = Waggle::start(&[]).unwrap();
    let resp = waggle_tests::prom::client()
        .get(format!("{}/api/v1/query_range", w.base()))
        .query(&[
            ("query", "vector(1)"),
            ("start", "-9e15"),
            ("end", "9e15"),
            ("step", "1000"),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: serde_json::Value = resp.json().unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("exceeded maximum resolution of 11,000 points"),
        "{v}"
    );
    for (q, t) in [
        ("x[1000000y]", "9e15"),
        ("vector(1) offset 1000000y", "-9e15"),
        ("x @ 9e15", "0"),
    ] {
        let (status, v) = query(&w.base(), q, &[("time", t)]);
        assert!(status == 200 || status == 400, "{q} at {t}: {status} {v}");
    }
    assert!(healthy(&w));
}

#[test]
fn queries_beyond_the_concurrency_limit_wait_then_time_out() {
    let w = Waggle::start(&["--query-max-concurrency", "1"]).unwrap();
    traffic(&w);
    let base = w.base();
    let slow = {
        let base = base.clone();
        std::thread::spawn(move || query(&base, SLOW, &[("timeout", "4s")]).0)
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!slow.is_finished());
    let (status, v) = query(&base, "vector(1)", &[("timeout", "500ms")]);
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["errorType"], "timeout");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("all 1 query slots busy"),
        "{v}"
    );
    slow.join().unwrap();
    let (status, _) = query(&base, "vector(1)", &[("timeout", "5s")]);
    assert_eq!(status, 200, "a slot is free again");
    let (status, v) = post(&w.ingest_base(), "/v1/events", b"[]".to_vec(), &[JSON]);
    assert_eq!(status, 202, "{v}");
}
