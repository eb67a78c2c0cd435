//! Bounded fuzz runs of every input path (see `waggle_tests::fuzz`): the wire decoder and
//! what the store does with what it accepts, the remote-write decoder and the all-or-nothing
//! apply, JSON ingest and the PromQL endpoints over HTTP. Inputs that ever failed live in
//! `tests/fuzz/<target>/` and are replayed first.

use waggle::db::Lock;
use waggle::mesh::Mesh;
use waggle::store::{Limits, Store};
use waggle_tests::client::{self, now_ms, post, JSON};
use waggle_tests::fuzz;
use waggle_tests::prom::Waggle;
use waggle_wire::{sample, BatchBuilder};

/// An answer's kind: its message up to the first digit or quote (positions and values vary).
fn signature(msg: &str) -> String {
    msg.split(|c: char| c.is_ascii_digit() || c == '"')
        .next()
        .unwrap_or("")
        .to_owned()
}

fn small_store() -> Store {
    Store::new(Limits {
        max_series: 5_000,
        max_samples_per_series: 1_000,
        ..Limits::default()
    })
}

#[test]
fn wire_batches() {
    let mut seeds = Vec::new();
    for hex in ["empty", "inbound-4", "outbound-grpc"] {
        let text = std::fs::read_to_string(format!(
            "{}/../wire/testdata/{hex}.hex",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let digits: String = text.split_whitespace().collect();
        let bytes = (0..digits.len() / 2)
            .map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        seeds.push(bytes);
    }
    for (n, seq, traced) in [(1, 1, false), (20, 2, true), (200, 3, false)] {
        let mut b = BatchBuilder::new();
        for e in sample::inbound(n, seq, traced) {
            b.push(&e);
        }
        seeds.push(b.finish(&sample::header(seq)));
        // The same shapes as outbound gRPC calls, with paths.
        let mut b = BatchBuilder::new();
        for mut e in sample::inbound(n, seq, traced) {
            e.reporter = waggle_wire::Reporter::Source;
            e.protocol = waggle_wire::Protocol::Grpc;
            e.grpc_status = Some(14);
            e.upstream_cluster = "outbound|9080||reviews.bookinfo.svc.cluster.local".into();
            e.path = Some("/reviews.Reviews/Get".into());
            b.push(&e);
        }
        seeds.push(b.finish(&sample::header(seq)));
    }
    let now = 1_767_225_700_000;
    let mut store = small_store();
    let mut mesh = Mesh::new(waggle::families::builtin());
    let r = fuzz::run("wire", seeds, &[], |input| {
        let batch = match waggle_wire::decode(input) {
            Ok(b) => b,
            Err(e) => return Ok(signature(&e.to_string())),
        };
        if let Err(e) = waggle::api::ingest::check_batch(&batch) {
            return Ok(signature(&e));
        }
        // Whatever decodes must count into the store without panicking, within its limits.
        let out = mesh.ingest(&mut store, &batch, now);
        if out.events != batch.records.len() as u64 {
            return Err(format!(
                "{} records but {} events",
                batch.records.len(),
                out.events
            ));
        }
        if store.series_count() > 5_000 {
            return Err("the series limit did not hold".into());
        }
        store.maintain(now);
        Ok(format!(
            "ok {} {}",
            batch.keys.len().min(8),
            out.refused_series.min(1)
        ))
    });
    assert!(r.inputs > 100, "{r:?}");
}

#[test]
fn remote_write_requests() {
    let now = now_ms();
    let seeds: Vec<Vec<u8>> = [
        vec![client::ts(
            "up",
            &[("job", "a")],
            &[(now - 2000, 1.0), (now - 1000, 0.0)],
        )],
        vec![
            client::ts(
                "kpi_total",
                &[("shop", "eu"), ("le", "+Inf")],
                &[(now - 500, 7.0)],
            ),
            client::ts(
                "kpi_total",
                &[("shop", "eu"), ("le", "+Inf")],
                &[(now - 400, 8.0)],
            ),
            client::ts("x", &[], &[(now, f64::from_bits(0x7ff0_0000_0000_0002))]),
        ],
    ]
    .into_iter()
    .map(|series| {
        prost::Message::encode_to_vec(&waggle::api::ingest::WriteRequest { timeseries: series })
    })
    .collect();
    let lock = Lock::new(small_store());
    let r = fuzz::run("remote_write", seeds, &["__name__", "\u{0}"], |input| {
        let req = match waggle::prompb::decode(input.to_vec(), &waggle::prompb::Limits::default()) {
            Ok(r) => r,
            Err(e) => return Ok(signature(&e.to_string())),
        };
        let before = lock.read().series_count();
        match waggle::db::write::apply(&lock, &req, now) {
            Ok(n) if n != req.sample_count() => {
                Err(format!("stored {n} of {}", req.sample_count()))
            }
            Err(e) if lock.read().series_count() != before => {
                Err(format!("refused ({e}) yet the series count moved"))
            }
            Ok(_) => Ok("stored".into()),
            Err(e) => Ok(signature(&e.to_string())),
        }
    });
    assert!(r.inputs > 100, "{r:?}");
}

#[test]
fn json_events() {
    let w = Waggle::start(&["--max-series", "20000"]).unwrap();
    let base = w.ingest_base();
    let seeds = vec![
        br#"[{"workload":"podinfo","namespace":"test","response_code":200,"duration_ms":12.5}]"#.to_vec(),
        br#"[{"reporter":"source","workload":"a","namespace":"b","app":"a","version":"v1","peer_workload":"c","peer_namespace":"d","service":"svc","response_code":503,"duration_ms":0,"method":"POST","end_unix_ms":1767225600000,"grpc_status":14}]"#.to_vec(),
        b"[]".to_vec(),
    ];
    let tokens = [
        "\"",
        ",",
        "{",
        "}",
        "[",
        "]",
        "null",
        "-1",
        "1e309",
        "\"\\u0000\"",
        "18446744073709551616",
        "\"duration_ms\":",
    ];
    let r = fuzz::run("json", seeds, &tokens, |input| {
        let (status, v) = post(&base, "/v1/events", input.to_vec(), &[JSON]);
        match status {
            202 if v["accepted"].is_u64() => Ok("202".into()),
            400 if v["error"].as_str().is_some_and(|e| !e.is_empty()) => {
                Ok(signature(v["error"].as_str().unwrap_or("")))
            }
            _ => Err(format!("answered {status}: {v}")),
        }
    });
    assert!(r.inputs > 100, "{r:?}");
}

#[test]
fn promql_queries() {
    let w = Waggle::start(&["--query-max-samples", "1000000", "--query-timeout", "2s"]).unwrap();
    for seq in 0..3 {
        let events = client::recent(sample::inbound(100, seq + 1, false));
        let (status, _) = post(
            &w.ingest_base(),
            "/v1/events",
            client::wire(&events, &sample::header(seq)),
            &[client::WIRE],
        );
        assert_eq!(status, 202);
    }
    let cases = include_str!("../promql/cases.txt");
    let seeds: Vec<Vec<u8>> = cases
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let tokens = [
        "(",
        ")",
        "[5m]",
        "[1h:1ms]",
        "[100y:1s]",
        "sum(",
        "rate(",
        " by (le)",
        " offset -1y",
        " @ 9e15",
        "1e308",
        "{a=~\".*\"}",
        "+",
        "/",
        "^",
        " and ",
        " unless ",
        " bool ",
        "-",
        "histogram_quantile(0.9,",
        "label_replace(",
        "\"",
        "#",
        "topk(",
        "count_values(\"x\",",
        "absent(",
        "time()",
        "[0s]",
        "@ start()",
        "__name__",
        "!~",
    ];
    let base = w.base();
    let http = waggle_tests::prom::client();
    let r = fuzz::run("promql", seeds, &tokens, |input| {
        let q = String::from_utf8_lossy(input).into_owned();
        let which = input.first().copied().unwrap_or(0) % 3;
        let req = match which {
            0 => http
                .post(format!("{base}/api/v1/query"))
                .form(&[("query", q.as_str()), ("timeout", "2s")]),
            1 => http.post(format!("{base}/api/v1/query_range")).form(&[
                ("query", q.as_str()),
                ("start", "1767225600"),
                ("end", "1767229200"),
                ("step", "15"),
                ("timeout", "2s"),
            ]),
            _ => http
                .post(format!("{base}/api/v1/series"))
                .form(&[("match[]", q.as_str())]),
        };
        let resp = req.send().map_err(|e| format!("no answer: {e}"))?;
        let status = resp.status().as_u16();
        let v: serde_json::Value = resp
            .json()
            .map_err(|e| format!("{status} without JSON: {e}"))?;
        match status {
            200 | 400 | 422 | 503 if v["status"].is_string() => Ok(format!(
                "{which} {status} {}",
                signature(v["error"].as_str().unwrap_or(""))
            )),
            _ => Err(format!("answered {status}: {v}")),
        }
    });
    assert!(r.inputs > 100, "{r:?}");
    let ok = http
        .get(format!("{base}/-/healthy"))
        .send()
        .is_ok_and(|r| r.status() == 200);
    assert!(ok, "still healthy after the run");
}
