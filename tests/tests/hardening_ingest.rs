//! Ingest under hostile input: every refusal names its reason and changes nothing, sums stay
//! exact, bounds hold, and what the series limit costs is said, not hidden.

#![allow(clippy::type_complexity)] // case tables read best as inline tuples

use waggle_tests::client::{self, metric, now_ms, post, recent, rw_body, ts, wire, PROTOBUF, WIRE};
use waggle_tests::prom::Waggle;
use waggle_wire::sample;

fn error(v: &serde_json::Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}

#[test]
fn remote_write_label_bounds_are_checked_in_linear_time_with_clear_errors() {
    let w = Waggle::start(&[]).unwrap();
    let base = w.ingest_base();
    let now = now_ms();
    let many: Vec<(String, String)> = (0..100_000)
        .map(|i| (format!("l{i}"), "v".into()))
        .collect();
    let labels: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let t = std::time::Instant::now();
    let (status, v) = post(
        &base,
        "/api/v1/write",
        rw_body(vec![ts("x", &labels, &[(now, 1.0)])]),
        &[PROTOBUF],
    );
    assert_eq!(status, 400, "{v}");
    assert!(error(&v).contains("more than the 64 allowed"), "{v}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    let long_name = "n".repeat(1025);
    let long_value = "v".repeat(16 * 1024 + 1);
    let cases = [
        (
            ts("x", &[(&long_name, "v")], &[(now, 1.0)]),
            "label name of 1025 bytes",
        ),
        (
            ts("x", &[("a", &long_value)], &[(now, 1.0)]),
            "the value of label \"a\" is 16385 bytes",
        ),
        (
            ts("x", &[("a", "1"), ("a", "2")], &[(now, 1.0)]),
            "duplicate label name \"a\"",
        ),
        (ts("x-y", &[], &[(now, 1.0)]), "invalid metric name"),
    ];
    for (series, want) in cases {
        let (status, v) = post(&base, "/api/v1/write", rw_body(vec![series]), &[PROTOBUF]);
        assert_eq!(status, 400, "{want}: {v}");
        assert!(error(&v).contains(want), "{want}: {v}");
    }
    let series: Vec<_> = (0..100_001)
        .map(|i| ts("x", &[("i", &i.to_string())], &[]))
        .collect();
    let (status, v) = post(&base, "/api/v1/write", rw_body(series), &[PROTOBUF]);
    assert_eq!(status, 400, "{v}");
    assert!(error(&v).contains("more than 100000 series"), "{v}");
    assert_eq!(
        metric(&w.base(), "waggle_series"),
        0.0,
        "nothing was stored"
    );
}

#[test]
fn a_body_that_would_decompress_past_the_bound_is_refused_before_decoding() {
    let w = Waggle::start(&["--max-body-bytes", "65536"]).unwrap();
    // 1 MB of protobuf (one series whose label value is mostly zeros) in a few KB of snappy.
    let raw = prost::Message::encode_to_vec(&client::ts("x", &[("a", &"0".repeat(1 << 20))], &[]));
    let mut req = vec![0x0a];
    let mut n = raw.len();
    while n >= 0x80 {
        req.push((n as u8) | 0x80);
        n >>= 7;
    }
    req.push(n as u8);
    req.extend(raw);
    let body = snap::raw::Encoder::new().compress_vec(&req).unwrap();
    assert!(body.len() < 65536);
    let (status, v) = post(&w.ingest_base(), "/api/v1/write", body, &[PROTOBUF]);
    assert_eq!(status, 413, "{v}");
    assert!(error(&v).contains("would decompress to"), "{v}");
    assert_eq!(
        metric(
            &w.base(),
            "waggle_ingest_rejected_total{endpoint=\"remote_write\",reason=\"too_large\"}"
        ),
        1.0
    );
}

#[test]
fn a_refused_remote_write_changes_nothing() {
    let w = Waggle::start(&["--max-samples-per-series", "3", "--max-series", "4"]).unwrap();
    let (base, q) = (w.ingest_base(), w.base());
    let now = now_ms();
    let write = |series| post(&base, "/api/v1/write", rw_body(series), &[PROTOBUF]);
    assert_eq!(
        write(vec![ts("kpi", &[("a", "1")], &[(now - 3000, 1.0)])]).0,
        204
    );
    let cases = vec![
        (
            "an older sample for a series, later in the same request",
            vec![
                ts("kpi", &[("a", "1")], &[(now - 2000, 2.0)]),
                ts("kpi", &[("a", "new")], &[(now - 2000, 2.0)]),
                ts("kpi", &[("a", "1")], &[(now - 2500, 3.0)]),
            ],
            "out of order sample",
        ),
        (
            "more samples than the series may hold",
            vec![
                ts("kpi", &[("a", "new")], &[(now - 2000, 2.0)]),
                ts(
                    "kpi",
                    &[("a", "1")],
                    &[(now - 2000, 2.0), (now - 1500, 2.0), (now - 1000, 2.0)],
                ),
            ],
            "already holds 3 samples",
        ),
        (
            "new series past the series limit",
            (0..5)
                .map(|i| ts("kpi", &[("b", &i.to_string())], &[(now - 1000, 1.0)]))
                .collect(),
            "series limit of 4 reached",
        ),
        (
            "a different value for the newest timestamp",
            vec![ts("kpi", &[("a", "1")], &[(now - 3000, 9.0)])],
            "duplicate sample for timestamp",
        ),
    ];
    for (what, series, want) in cases {
        let (status, v) = write(series);
        assert_eq!(status, 400, "{what}: {v}");
        assert!(error(&v).contains(want), "{what}: {v}");
        assert_eq!(
            metric(&q, "waggle_series"),
            1.0,
            "{what}: no series was left behind"
        );
        assert_eq!(
            client::value(&q, "count_over_time(kpi[1h])"),
            Some(1.0),
            "{what}: no sample was stored"
        );
    }
    // Prometheus 2.42 sends a series once per sample: in order, that is fine.
    let (status, v) = write(vec![
        ts("kpi", &[("a", "1")], &[(now - 2000, 2.0)]),
        ts("kpi", &[("a", "1")], &[(now - 1000, 3.0)]),
        ts("kpi", &[("a", "1")], &[(now - 1000, 3.0)]),
    ]);
    assert_eq!(status, 204, "{v}");
    assert_eq!(client::value(&q, "count_over_time(kpi[1h])"), Some(3.0));
    // The refusals above left room: a mesh batch gets the series it needs up to the limit.
    let events = recent(sample::inbound(5, 1, false));
    let (status, v) = post(
        &base,
        "/v1/events",
        wire(&events, &sample::header(1)),
        &[WIRE],
    );
    assert_eq!(status, 202, "{v}");
    assert_eq!(metric(&q, "waggle_series"), 4.0);
}

#[test]
fn duration_sums_are_exact_far_past_32_bits() {
    let w = Waggle::start(&[]).unwrap();
    let (base, q) = (w.ingest_base(), w.base());
    let end_us = (now_ms() as u64 - 500) * 1000;
    let one = |duration_us: u64| {
        let mut e = sample::inbound(1, 1, false).remove(0);
        e.response_code = 200;
        e.response_flags = "-".into();
        e.duration_us = duration_us;
        e.start_unix_us = end_us - duration_us;
        e
    };
    // A thousand requests of 5 s in one step: 5e9 µs, past u32::MAX (4.29e9).
    let (status, v) = post(
        &base,
        "/v1/events",
        wire(&vec![one(5_000_000); 1000], &sample::header(1)),
        &[WIRE],
    );
    assert_eq!(status, 202, "{v}");
    let sum = r#"sum(istio_request_duration_milliseconds_sum{reporter="destination"})"#;
    assert_eq!(client::value(&q, sum), Some(5_000_000.0));
    // A million requests of an hour each, in the same step: 3.6e15 µs.
    let w2 = Waggle::start(&[]).unwrap();
    let batch = wire(&vec![one(3_600_000_000); 10_000], &sample::header(2));
    for _ in 0..100 {
        let (status, v) = post(&w2.ingest_base(), "/v1/events", batch.clone(), &[WIRE]);
        assert_eq!(status, 202, "{v}");
    }
    assert_eq!(client::value(&w2.base(), sum), Some(3.6e12));
    assert_eq!(
        client::value(
            &w2.base(),
            r#"sum(istio_request_duration_milliseconds_count{reporter="destination"})"#
        ),
        Some(1e6)
    );
    let (status, v) = post(
        &base,
        "/v1/events",
        wire(&[one(366 * 86_400_000_000)], &sample::header(3)),
        &[WIRE],
    );
    assert_eq!(status, 400, "{v}");
    assert!(error(&v).contains("longer than"), "{v}");
}

#[test]
fn events_the_series_limit_cost_are_counted_and_said() {
    let w = Waggle::start(&["--max-series", "40"]).unwrap();
    let events = recent(sample::inbound(50, 2, false));
    let (status, v) = post(
        &w.ingest_base(),
        "/v1/events",
        wire(&events, &sample::header(1)),
        &[WIRE],
    );
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["accepted"], 50);
    assert_eq!(v["series_limit"], 40);
    assert!(v["refused_series"].as_u64().unwrap() > 0, "{v}");
    let lost = v["not_counted"]["istio_request_bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(lost > 0, "{v}");
    assert_eq!(
        metric(
            &w.base(),
            "waggle_events_not_counted_total{family=\"istio_request_bytes\"}"
        ),
        lost as f64
    );
    assert_eq!(metric(&w.base(), "waggle_events_ingested_total"), 50.0);
}

#[test]
fn absurd_dropped_counts_are_refused_and_the_counter_never_goes_down() {
    let w = Waggle::start(&[]).unwrap();
    let events = recent(sample::inbound(3, 3, false));
    let mut h = sample::header(1);
    h.dropped = 5;
    assert_eq!(
        post(&w.ingest_base(), "/v1/events", wire(&events, &h), &[WIRE]).0,
        202
    );
    h.dropped = u64::MAX;
    let (status, v) = post(&w.ingest_base(), "/v1/events", wire(&events, &h), &[WIRE]);
    assert_eq!(status, 400, "{v}");
    assert!(error(&v).contains("dropped events"), "{v}");
    assert_eq!(
        metric(&w.base(), "waggle_events_dropped_by_sidecars_total"),
        5.0
    );
}

#[test]
fn headers_are_read_as_the_rfcs_say() {
    let w = Waggle::start(&["--ingest-token", "s3cret"]).unwrap();
    let base = w.ingest_base();
    let json =
        br#"[{"workload":"podinfo","namespace":"test","response_code":200,"duration_ms":3}]"#
            .to_vec();
    let events = wire(&recent(sample::inbound(2, 4, false)), &sample::header(1));
    let cases: Vec<(&str, Vec<u8>, Vec<(&str, &str)>, u16, &str)> = vec![
        (
            "upper-case JSON",
            json.clone(),
            vec![
                ("content-type", "APPLICATION/JSON; charset=UTF-8"),
                ("authorization", "bearer s3cret"),
            ],
            202,
            "",
        ),
        (
            "a look-alike type",
            json.clone(),
            vec![
                ("content-type", "application/jsonx"),
                ("authorization", "Bearer s3cret"),
            ],
            415,
            "application/jsonx",
        ),
        (
            "text",
            json.clone(),
            vec![
                ("content-type", "text/plain"),
                ("authorization", "Bearer s3cret"),
            ],
            415,
            "text/plain",
        ),
        (
            "gzip events",
            events.clone(),
            vec![
                WIRE,
                ("content-encoding", "gzip"),
                ("authorization", "BEARER s3cret"),
            ],
            415,
            "gzip",
        ),
        (
            "another scheme",
            events.clone(),
            vec![WIRE, ("authorization", "Basic s3cret")],
            401,
            "missing bearer token",
        ),
        (
            "the wire format",
            events,
            vec![WIRE, ("authorization", "Bearer s3cret")],
            202,
            "",
        ),
        (
            "zstd remote write",
            vec![1, 2, 3],
            vec![
                PROTOBUF,
                ("content-encoding", "zstd"),
                ("authorization", "Bearer s3cret"),
            ],
            415,
            "zstd",
        ),
    ];
    for (what, body, headers, want, msg) in cases {
        let path = if what.contains("remote") {
            "/api/v1/write"
        } else {
            "/v1/events"
        };
        let (status, v) = post(&base, path, body, &headers);
        assert_eq!(status, want, "{what}: {v}");
        assert!(error(&v).contains(msg), "{what}: {v}");
    }
}
