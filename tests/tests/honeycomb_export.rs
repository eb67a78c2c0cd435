//! Honeycomb export against the emulator in `waggle_tests::honeycomb`: every field and type,
//! batching limits, retries without loss or duplicates, per-event refusals, queue overflow,
//! refused keys and readiness, sampling, shutdown draining, and the same request shape as
//! Honeycomb's own libhoney.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use waggle::honeycomb::columns::{Ty, COLUMNS};
use waggle_tests::honeycomb::{Emulator, Fault, INGEST_KEY};
use waggle_tests::prom::{client, Waggle};
use waggle_wire::{sample, BatchBuilder, Event, Protocol, Reporter};

const WAIT: Duration = Duration::from_secs(20);

fn start(emu: &Emulator, extra: &[&str]) -> Waggle {
    let base = emu.base();
    let mut args = vec![
        "--honeycomb-api-key",
        INGEST_KEY,
        "--honeycomb-base-url",
        base.as_str(),
        "--honeycomb-retry-initial",
        "10ms",
        "--honeycomb-retry-max",
        "100ms",
    ];
    if !extra.contains(&"--honeycomb-flush-interval") {
        args.extend_from_slice(&["--honeycomb-flush-interval", "100ms"]);
    }
    args.extend_from_slice(extra);
    Waggle::start(&args).expect("waggle")
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// `n` traced inbound events of `reviews`, re-timed to the last two seconds.
fn events(n: usize, seed: u64) -> Vec<Event> {
    let t0 = now_us() - 2_000_000;
    let mut evs = sample::inbound(n, seed, true);
    let first = evs.first().map_or(0, |e| e.start_unix_us);
    for e in &mut evs {
        e.start_unix_us = t0 + (e.start_unix_us - first) / 2;
    }
    evs
}

fn wire(events: &[Event], sequence: u64) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for e in events {
        b.push(e);
    }
    b.finish(&sample::header(sequence))
}

fn post(w: &Waggle, body: Vec<u8>) {
    let r = client()
        .post(format!("{}/v1/events", w.ingest_base()))
        .header("content-type", "application/x-waggle-batch")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().unwrap_or_default());
}

fn metric(w: &Waggle, series: &str) -> f64 {
    let text = client()
        .get(format!("{}/metrics", w.base()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    waggle_tests::prom::exposed(&text, series).unwrap_or_else(|| panic!("{series} not in /metrics"))
}

fn status(w: &Waggle, path: &str) -> u16 {
    client()
        .get(format!("{}{path}", w.base()))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// Export health (`/-/export`); `/-/ready` must stay 200 throughout, whatever Honeycomb does.
fn export_ok(w: &Waggle) -> u16 {
    assert_eq!(
        status(w, "/-/ready"),
        200,
        "Honeycomb must never take the query API out of its Service"
    );
    status(w, "/-/export")
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn trace_counts(emu: &Emulator) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for e in emu.accepted() {
        let t = e.data["trace.trace_id"].as_str().unwrap().to_owned();
        *seen.entry(t).or_insert(0) += 1;
    }
    seen
}

#[test]
fn every_field_reaches_honeycomb_with_its_type() {
    let emu = Emulator::start();
    let w = start(&emu, &[]);
    let mut evs = events(60, 1);
    // An outbound gRPC call with a captured path, and a request that failed without a response.
    let mut grpc = evs[0].clone();
    grpc.reporter = Reporter::Source;
    grpc.protocol = Protocol::Grpc;
    grpc.grpc_status = Some(14);
    grpc.response_code = 200;
    grpc.response_flags = "-".into();
    grpc.path = Some("/reviews.Reviews/Get".into());
    grpc.upstream_cluster = "outbound|9080||ratings.bookinfo.svc.cluster.local".into();
    grpc.trace_id = Some("0af7651916cd43dd8448eb211c80319c".into());
    let mut reset = evs[1].clone();
    reset.response_code = 0;
    reset.response_flags = "UC".into();
    reset.trace_id = Some("00000000000000000000000000000bad".into());
    evs.push(grpc.clone());
    evs.push(reset.clone());
    post(&w, wire(&evs, 42));
    assert_eq!(emu.wait_for(evs.len(), WAIT), evs.len());
    assert_eq!(emu.problems(), Vec::<String>::new());

    let req = &emu.requests()[0];
    assert_eq!(req.dataset, "flagger-metrics");
    assert_eq!(req.header("x-honeycomb-team"), Some(INGEST_KEY));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.encoding.as_deref(), Some("zstd"));
    assert_eq!(
        req.header("user-agent"),
        Some(concat!("waggle/", env!("CARGO_PKG_VERSION")))
    );

    let by_trace: HashMap<String, _> = emu
        .accepted()
        .into_iter()
        .map(|e| (e.data["trace.trace_id"].as_str().unwrap().to_owned(), e))
        .collect();
    assert_eq!(by_trace.len(), evs.len(), "every event once");
    let local = sample::header(42).local;
    for e in &evs {
        let got = &by_trace[e.trace_id.as_deref().unwrap()];
        let d = &got.data;
        for (k, v) in d {
            let c = COLUMNS
                .iter()
                .find(|c| c.name == k)
                .unwrap_or_else(|| panic!("unlisted column {k}"));
            let ok = match c.ty {
                Ty::Str => v.is_string(),
                Ty::Int => v.is_u64(),
                Ty::Float => v.is_f64(),
                Ty::Bool => v.is_boolean(),
            };
            assert!(ok, "{k}={v} is not {}", c.ty.as_str());
        }
        let time = got.time.as_ref().unwrap().as_str().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(time).unwrap();
        assert_eq!(
            parsed.timestamp_micros() as u64,
            e.start_unix_us,
            "time is the request start"
        );
        assert!(
            time.ends_with('Z') && time.split('.').nth(1).unwrap().len() == 10,
            "nanoseconds: {time}"
        );
        assert_eq!(got.samplerate.as_ref().unwrap(), 1);
        assert_eq!(
            d["duration_ms"].as_f64().unwrap(),
            e.duration_us as f64 / 1000.0
        );
        assert_eq!(d["http.status_code"], u64::from(e.response_code));
        assert_eq!(d["http.response.status_code"], u64::from(e.response_code));
        assert_eq!(
            d["error"],
            e.response_code >= 500 || e.response_flags != "-"
        );
        assert_eq!(d["http.request.method"], e.method.as_str());
        assert_eq!(d["envoy.response_flags"], e.response_flags.as_str());
        assert_eq!(d["http.request.body.size"], e.request_bytes);
        assert_eq!(d["http.response.body.size"], e.response_bytes);
        assert_eq!(d["meta.sidecar"], "reviews-v1.bookinfo");
        assert_eq!(d["meta.batch_sequence"], 42);
        assert_eq!(d["meta.sidecar.vm_id"], 7);
        let (src, dst) = match e.reporter {
            Reporter::Destination => (&e.peer, &local),
            Reporter::Source => (&local, &e.peer),
        };
        assert_eq!(d["waggle.reporter"], e.reporter.as_str());
        for (side, w) in [("source", src), ("destination", dst)] {
            assert_eq!(d[&format!("{side}.workload")], w.workload.as_str());
            assert_eq!(d[&format!("{side}.namespace")], w.namespace.as_str());
            assert_eq!(d[&format!("{side}.app")], w.app.as_str());
            assert_eq!(d[&format!("{side}.version")], w.version.as_str());
            assert_eq!(d[&format!("{side}.cluster")], w.cluster.as_str());
        }
        assert_eq!(d["service.name"], dst.canonical_service.as_str());
        assert_eq!(d["k8s.namespace.name"], dst.namespace.as_str());
        assert_eq!(
            d.get("url.path").and_then(|p| p.as_str()),
            e.path.as_deref()
        );
        let grpc_code = d.get("rpc.grpc.status_code").and_then(|c| c.as_u64());
        assert_eq!(grpc_code, (e.protocol == Protocol::Grpc).then_some(14));
    }
    let g = &by_trace[grpc.trace_id.as_deref().unwrap()].data;
    assert_eq!(
        g["destination.workload"],
        grpc.peer.workload.as_str(),
        "outbound: the peer is the destination"
    );
    assert_eq!(g["envoy.upstream_cluster"], grpc.upstream_cluster.as_str());
    assert_eq!(
        by_trace[reset.trace_id.as_deref().unwrap()].data["error"],
        true
    );
    assert_eq!(
        metric(&w, "waggle_honeycomb_events_sent_total"),
        evs.len() as f64
    );
    assert_eq!(export_ok(&w), 200);
}

#[test]
fn gzip_and_one_dataset_per_service() {
    let emu = Emulator::start();
    let w = start(
        &emu,
        &[
            "--honeycomb-compression",
            "gzip",
            "--honeycomb-dataset-mode",
            "per-service",
        ],
    );
    let mut evs = events(20, 2);
    let mut other = events(10, 3);
    for e in &mut other {
        e.reporter = Reporter::Source;
        e.peer = sample::workload("details-v1", "bookinfo", "details", "v1");
    }
    evs.extend(other);
    post(&w, wire(&evs, 1));
    assert_eq!(emu.wait_for(30, WAIT), 30);
    assert!(emu
        .requests()
        .iter()
        .all(|r| r.encoding.as_deref() == Some("gzip")));
    let mut per: HashMap<String, usize> = HashMap::new();
    for e in emu.accepted() {
        assert_eq!(e.data["service.name"].as_str(), Some(e.dataset.as_str()));
        *per.entry(e.dataset).or_default() += 1;
    }
    assert_eq!(
        per,
        HashMap::from([("reviews".into(), 20), ("details".into(), 10)])
    );
    assert_eq!(emu.problems(), Vec::<String>::new());
}

#[test]
fn batches_close_at_the_event_count_the_byte_cap_and_the_interval() {
    let emu = Emulator::start();
    let w = start(
        &emu,
        &[
            "--honeycomb-batch-events",
            "100",
            "--honeycomb-flush-interval",
            "300ms",
        ],
    );
    post(&w, wire(&events(250, 4), 1));
    assert_eq!(emu.wait_for(250, WAIT), 250);
    let mut sizes: Vec<usize> = emu.requests().iter().map(|r| r.events.len()).collect();
    sizes.sort_unstable();
    assert_eq!(
        sizes,
        [50, 100, 100],
        "two full batches, the rest on the interval"
    );
    drop(w);

    // 2,000 events of about 4 KB: the 5 MB body cap splits them, whatever the count limit.
    let emu = Emulator::start();
    let w = start(&emu, &["--honeycomb-batch-events", "100000"]);
    let mut big = events(2000, 5);
    for (i, e) in big.iter_mut().enumerate() {
        e.path = Some(format!("/{i}/{}", "x".repeat(3000)));
    }
    // One event over Honeycomb's 1 MB limit is dropped and counted; the rest still go.
    let mut huge = big[0].clone();
    huge.path = Some(format!("/{}", "y".repeat(1_100_000)));
    huge.trace_id = Some("ffffffffffffffffffffffffffffffff".into());
    for chunk in big.chunks(500) {
        post(&w, wire(chunk, 2));
    }
    post(&w, wire(&[huge], 3));
    assert_eq!(emu.wait_for(2000, WAIT), 2000);
    let reqs = emu.requests();
    assert!(reqs.len() >= 2, "{} requests", reqs.len());
    for r in &reqs {
        assert!(r.json_bytes <= 5_000_000, "body of {} bytes", r.json_bytes);
    }
    eventually("the too-large drop", || {
        metric(
            &w,
            "waggle_honeycomb_events_dropped_total{reason=\"too_large\"}",
        ) == 1.0
    });
    assert_eq!(emu.accepted_count(), 2000);
    assert_eq!(emu.problems(), Vec::<String>::new());
}

#[test]
fn retries_deliver_every_event_exactly_once() {
    let emu = Emulator::start();
    let faults = [
        Fault::Status(500),
        Fault::Status(429),
        Fault::HangUp,
        Fault::Status(503),
        Fault::Slow(Duration::from_millis(50)),
        Fault::Status(502),
        Fault::HangUp,
        Fault::Status(500),
        Fault::Status(500),
        Fault::Status(500),
    ];
    let failing = faults
        .iter()
        .filter(|f| !matches!(f, Fault::Slow(_)))
        .count();
    emu.script(faults);
    let w = start(
        &emu,
        &[
            "--honeycomb-batch-events",
            "150",
            "--honeycomb-max-in-flight",
            "3",
        ],
    );
    let mut sent = Vec::new();
    for i in 0..40 {
        let evs = events(100, 100 + i);
        sent.extend(evs.iter().map(|e| e.trace_id.clone().unwrap()));
        post(&w, wire(&evs, i));
    }
    assert_eq!(emu.wait_for(4000, WAIT), 4000);
    std::thread::sleep(Duration::from_millis(300));
    let seen = trace_counts(&emu);
    assert_eq!(seen.len(), sent.len(), "every event arrived");
    assert!(seen.values().all(|c| *c == 1), "no event twice");
    assert!(sent.iter().all(|t| seen.contains_key(t)));
    assert_eq!(metric(&w, "waggle_honeycomb_retries_total"), failing as f64);
    assert_eq!(metric(&w, "waggle_honeycomb_events_sent_total"), 4000.0);
}

#[test]
fn per_event_refusals_are_counted_and_never_retried() {
    let emu = Emulator::start();
    emu.reject(|d| {
        (d["http.status_code"] == 404).then(|| "Event has too many columns.".to_owned())
    });
    let w = start(&emu, &[]);
    let evs = events(1000, 6);
    let refused = evs.iter().filter(|e| e.response_code == 404).count();
    assert!(refused > 0);
    post(&w, wire(&evs, 1));
    assert_eq!(emu.wait_for(1000 - refused, WAIT), 1000 - refused);
    eventually("the refusal count", || {
        metric(
            &w,
            "waggle_honeycomb_events_dropped_total{reason=\"rejected\"}",
        ) == refused as f64
    });
    std::thread::sleep(Duration::from_millis(300));
    let offered_404s: usize = emu
        .requests()
        .iter()
        .flat_map(|r| r.events.iter())
        .filter(|e| e["data"]["http.status_code"] == 404)
        .count();
    assert_eq!(
        offered_404s, refused,
        "refused events are sent once, never again"
    );
    assert_eq!(emu.accepted_count(), 1000 - refused);
}

#[test]
fn a_full_queue_drops_new_events_and_counts_them_exactly() {
    let emu = Emulator::start();
    emu.always(Some(Fault::Status(500)));
    let w = start(
        &emu,
        &[
            "--honeycomb-queue-events",
            "1000",
            "--honeycomb-batch-events",
            "100",
            "--honeycomb-max-in-flight",
            "1",
        ],
    );
    for i in 0..30 {
        post(&w, wire(&events(100, 200 + i), i));
    }
    assert_eq!(
        metric(
            &w,
            "waggle_honeycomb_events_dropped_total{reason=\"queue_full\"}"
        ),
        2000.0
    );
    assert_eq!(metric(&w, "waggle_honeycomb_queue_events"), 1000.0);
    assert_eq!(
        metric(&w, "waggle_events_ingested_total"),
        3000.0,
        "the store counts every event"
    );
    emu.always(None);
    assert_eq!(emu.wait_for(1000, WAIT), 1000);
    eventually("an empty queue", || {
        metric(&w, "waggle_honeycomb_queue_events") == 0.0
    });
    post(&w, wire(&events(100, 300), 31));
    assert_eq!(emu.wait_for(1100, WAIT), 1100);
    assert_eq!(
        metric(
            &w,
            "waggle_honeycomb_events_dropped_total{reason=\"queue_full\"}"
        ),
        2000.0
    );
    assert_eq!(trace_counts(&emu).len(), 1100);
}

#[test]
fn a_refused_key_stops_export_and_fails_export_health_never_readiness() {
    let emu = Emulator::start();
    let wrong = "hcxik_01notarealkey";
    let base = emu.base();
    let w = Waggle::start(&[
        "--honeycomb-api-key",
        wrong,
        "--honeycomb-base-url",
        &base,
        "--honeycomb-auth-recheck",
        "200ms",
        "--honeycomb-flush-interval",
        "50ms",
    ])
    .unwrap();
    eventually("a 503 from /-/export after GET /1/auth", || {
        emu.auth_calls() >= 1 && export_ok(&w) == 503
    });
    post(&w, wire(&events(50, 7), 1));
    eventually("drops counted as unauthorized", || {
        metric(
            &w,
            "waggle_honeycomb_events_dropped_total{reason=\"unauthorized\"}",
        ) == 50.0
    });
    assert_eq!(emu.accepted_count(), 0);
    assert_eq!(metric(&w, "waggle_honeycomb_key_accepted"), 0.0);
    // The key becomes valid (a rotated Secret, say): the recheck finds it and export resumes.
    emu.add_key(wrong, "ingest", true);
    eventually("export healthy again", || export_ok(&w) == 200);
    post(&w, wire(&events(50, 8), 2));
    assert_eq!(emu.wait_for(50, WAIT), 50);
    // Revoked mid-run: the batch's 401 stops export and readiness at once.
    emu.revoke(wrong);
    post(&w, wire(&events(50, 9), 3));
    eventually("export unhealthy after a 401 on a batch", || {
        export_ok(&w) == 503
    });
    assert_eq!(emu.accepted_count(), 50);
    drop(w);

    // A configuration key without Send Events is not enough.
    let emu = Emulator::start();
    emu.add_key("cfgkeywithoutsend0000", "configuration", false);
    let base = emu.base();
    let w = Waggle::start(&[
        "--honeycomb-api-key",
        "cfgkeywithoutsend0000",
        "--honeycomb-base-url",
        &base,
    ])
    .unwrap();
    eventually("GET /1/auth", || emu.auth_calls() >= 1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(export_ok(&w), 503);
}

#[test]
fn sampling_keeps_one_in_n_whole_traces_and_the_store_counts_all() {
    let emu = Emulator::start();
    let w = start(&emu, &["--honeycomb-sample-rate", "reviews=4"]);
    let evs = events(2000, 10);
    // Both sidecars of each request report it: the same trace ids in two batches.
    post(&w, wire(&evs, 1));
    post(&w, wire(&evs, 2));
    eventually("every event decided", || {
        let sampled = metric(&w, "waggle_honeycomb_events_sampled_out_total") as usize;
        sampled + emu.accepted_count() == 4000
    });
    let kept = emu.accepted_count();
    assert!((700..1300).contains(&kept), "kept {kept} of 4000 at 1 in 4");
    assert!(emu
        .accepted()
        .iter()
        .all(|e| e.samplerate.as_ref().unwrap() == 4));
    assert!(
        trace_counts(&emu).values().all(|c| *c == 2),
        "a trace is kept whole or not at all"
    );
    let r: serde_json::Value = client()
        .get(format!("{}/api/v1/query", w.base()))
        .query(&[("query", "sum(istio_requests_total)")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["data"]["result"][0]["value"][1], "4000", "{r}");
}

#[test]
fn shutdown_drains_the_queue_within_its_timeout() {
    let emu = Emulator::start();
    emu.always(Some(Fault::Slow(Duration::from_millis(100))));
    let w = start(
        &emu,
        &[
            "--honeycomb-flush-interval",
            "30s",
            "--honeycomb-batch-events",
            "200",
        ],
    );
    post(&w, wire(&events(500, 11), 1));
    w.stop();
    assert_eq!(
        emu.accepted_count(),
        500,
        "everything queued was delivered before exit"
    );

    // Honeycomb down: shutdown still ends, after the drain timeout rather than never.
    let emu = Emulator::start();
    emu.always(Some(Fault::Status(503)));
    let w = start(&emu, &["--honeycomb-drain-timeout", "500ms"]);
    post(&w, wire(&events(100, 12), 1));
    eventually("a first attempt", || !emu.requests().is_empty());
    let t = Instant::now();
    w.stop();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(emu.accepted_count(), 0);
}

/// Honeycomb's Python library, from PyPI, sends to the same emulator; waggle's requests must have
/// the same shape: endpoint, headers, encoding, body layout and time format.
#[test]
fn requests_have_the_shape_libhoney_sends() {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let has = std::process::Command::new(&python)
        .args(["-c", "import libhoney"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the libhoney comparison: pip install libhoney (see .ci/run)"
        );
        eprintln!("skipped: no libhoney in .venv");
        return;
    }
    let emu = Emulator::start();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("honeycomb/libhoney_send.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .args([emu.base().as_str(), INGEST_KEY, "flagger-metrics"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(emu.wait_for(3, WAIT), 3);
    let theirs = emu.requests().remove(0);
    let w = start(&emu, &["--honeycomb-compression", "gzip"]);
    post(&w, wire(&events(3, 13), 1));
    assert_eq!(emu.wait_for(6, WAIT), 6);
    let ours = emu
        .requests()
        .into_iter()
        .find(|r| {
            r.header("user-agent")
                .is_some_and(|u| u.starts_with("waggle/"))
        })
        .expect("waggle's request");
    assert_eq!(emu.problems(), Vec::<String>::new());
    assert_eq!(ours.dataset, theirs.dataset);
    for h in ["content-type", "content-encoding"] {
        assert_eq!(ours.header(h), theirs.header(h), "{h}");
    }
    assert!(
        ours.header("x-honeycomb-team").is_some() && theirs.header("x-honeycomb-team").is_some()
    );
    assert!(theirs
        .header("user-agent")
        .unwrap()
        .starts_with("libhoney-py/"));
    let keys = |r: &waggle_tests::honeycomb::Request| {
        let mut k: Vec<String> = r.events[0].as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&ours), keys(&theirs), "the same members per event");
    for r in [&ours, &theirs] {
        for e in &r.events {
            let t = e["time"].as_str().unwrap();
            let parsed = chrono::DateTime::parse_from_rfc3339(t).unwrap();
            assert_eq!(parsed.offset().local_minus_utc(), 0, "UTC: {t}");
            assert!(t.ends_with('Z'), "{t}");
            assert!(e["samplerate"].is_u64());
            assert!(e["data"].is_object());
        }
    }
    // The field both send with the same meaning has the same JSON type.
    for f in ["service.name", "duration_ms", "http.status_code", "error"] {
        let kind = |v: &serde_json::Value| match v {
            serde_json::Value::String(_) => "string",
            serde_json::Value::Bool(_) => "bool",
            serde_json::Value::Number(n) if n.is_f64() => "float",
            serde_json::Value::Number(_) => "int",
            _ => "other",
        };
        assert_eq!(
            kind(&ours.events[0]["data"][f]),
            kind(&theirs.events[0]["data"][f]),
            "{f}"
        );
    }
}
