//! Remote write out against real receivers (Prometheus 2.42 with its remote-write receiver,
//! VictoriaMetrics) and a scriptable one for faults: every step arrives once and in order
//! with the required headers, failures are retried or dropped as Prometheus's sender does,
//! an outage within `capacity` loses nothing, and beyond it the oldest steps are dropped.

use std::time::{Duration, Instant};

use waggle_tests::client::{self, post, JSON};
use waggle_tests::prom::{self, Prometheus, Waggle};
use waggle_tests::receiver::{Action, Receiver};
use waggle_tests::victoria::{self, VictoriaMetrics};

fn prometheus() -> Option<Prometheus> {
    match prom::binary() {
        Some(b) => Some(Prometheus::start(&b).unwrap()),
        None if std::env::var_os("CI").is_some() => {
            panic!("CI must run the remote-write tests: prometheus is missing")
        }
        None => {
            eprintln!("skipped: no prometheus binary");
            None
        }
    }
}

fn victoria_metrics() -> Option<VictoriaMetrics> {
    match victoria::binary() {
        Some(b) => Some(VictoriaMetrics::start(&b).unwrap()),
        None if std::env::var_os("CI").is_some() => {
            panic!("CI must run the remote-write tests: victoria-metrics is missing")
        }
        None => {
            eprintln!("skipped: no victoria-metrics binary");
            None
        }
    }
}

/// `ok` 200s and `errors` 503s for podinfo, ending now.
fn traffic(w: &Waggle, ok: usize, errors: usize) {
    let e = |code| {
        format!(
            r#"{{"workload":"podinfo","namespace":"test","response_code":{code},"duration_ms":12}}"#
        )
    };
    let events: Vec<String> = std::iter::repeat_n(e(200), ok)
        .chain(std::iter::repeat_n(e(503), errors))
        .collect();
    let (status, v) = post(
        &w.ingest_base(),
        "/v1/events",
        format!("[{}]", events.join(",")).into_bytes(),
        &[JSON],
    );
    assert_eq!(status, 202, "{v}");
}

fn scalar(base: &str, q: &str) -> Option<f64> {
    client::value(base, q)
}

fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const TOTAL: &str = r#"sum(istio_requests_total{reporter="destination"})"#;

/// Each delivered series' timestamps are consecutive steps, oldest first, each once.
fn assert_steps_in_order(r: &Receiver, step_ms: i64) {
    let delivered = r.delivered();
    assert!(!delivered.is_empty());
    for (series, samples) in delivered {
        for w in samples.windows(2) {
            assert!(w[1].0 > w[0].0, "{series}: {} then {}", w[0].0, w[1].0);
            let stale = |v: f64| v.to_bits() == prom::STALE_NAN;
            if !stale(w[1].1) {
                assert_eq!(w[1].0 - w[0].0, step_ms, "{series}: a gap after {}", w[0].0);
            }
        }
    }
}

#[test]
fn every_step_reaches_prometheus_and_victoria_metrics_once_with_the_required_headers() {
    let (Some(p), Some(vm)) = (prometheus(), victoria_metrics()) else {
        return;
    };
    let to_prom = Receiver::start(Some(format!("{}/api/v1/write", p.base())));
    let w = Waggle::start(&[
        "--remote-write-url",
        &to_prom.url(),
        "--remote-write-url",
        &vm.write_url(),
        "--external-label",
        "cluster=test-1",
    ])
    .unwrap();
    for _ in 0..20 {
        traffic(&w, 9, 1);
        std::thread::sleep(Duration::from_millis(250));
    }
    let total = scalar(&w.base(), TOTAL).unwrap();
    assert_eq!(total, 200.0);
    for (name, base) in [("Prometheus", p.base()), ("VictoriaMetrics", vm.base())] {
        eventually(
            &format!("{name} to count every request"),
            Duration::from_secs(15),
            || scalar(&base, TOTAL) == Some(total),
        );
        let by = scalar(
            &base,
            r#"count(istio_requests_total{reporter="destination",cluster="test-1",waggle_replica!=""})"#,
        );
        assert_eq!(
            by,
            scalar(
                &w.base(),
                r#"count(istio_requests_total{reporter="destination"})"#
            ),
            "{name}: labels"
        );
        assert_eq!(
            scalar(&base, r#"sum(resets(istio_requests_total[5m]))"#),
            Some(0.0),
            "{name}: no counter reset"
        );
    }
    let attempts = to_prom.attempts();
    assert!(
        attempts.iter().all(|a| a.status == 204),
        "Prometheus accepted every request"
    );
    let a = &attempts[0];
    assert_eq!(a.header("content-encoding"), Some("snappy"));
    assert_eq!(a.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(a.header("x-prometheus-remote-write-version"), Some("0.1.0"));
    assert!(a
        .header("user-agent")
        .is_some_and(|u| u.starts_with("waggle/")));
    for ts in attempts.iter().flat_map(|a| &a.request.timeseries) {
        let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "labels sorted and unique");
        assert!(ts.labels.iter().all(|l| !l.value.is_empty()));
    }
    assert_steps_in_order(&to_prom, 1000);
    assert_eq!(
        client::metric(
            &w.base(),
            &format!(
                "waggle_remote_storage_samples_failed_total{{remote_name=\"{0}\",url=\"{0}\"}}",
                to_prom.url()
            )
        ),
        0.0
    );
}

#[test]
fn failures_are_retried_or_dropped_as_prometheus_does() {
    let r = Receiver::start(None);
    let dir = std::env::temp_dir().join(format!("waggle-rw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let config = dir.join("waggle.toml");
    std::fs::write(
        &config,
        format!(
            "[[remote_write]]\nname = \"central\"\nurl = \"{}\"\nbearer_token_file = \"{}\"\nheaders = {{ \"X-Scope-OrgID\" = \"team-a\" }}\n[remote_write.queue_config]\nmin_backoff = \"100ms\"\nmax_backoff = \"400ms\"\nretry_on_http_429 = true\n",
            r.url(),
            token.display()
        ),
    )
    .unwrap();
    let retry_after = vec![("Retry-After".to_string(), "1".to_string())];
    r.script([
        Action::Answer(503, vec![]),
        Action::Answer(503, vec![]),
        Action::Answer(503, vec![]),
        Action::Forward,
        Action::Answer(429, retry_after),
        Action::Forward,
        Action::Answer(400, vec![]),
    ]);
    let w = Waggle::start(&["--config", config.to_str().unwrap()]).unwrap();
    traffic(&w, 5, 0);
    eventually("eight attempts", Duration::from_secs(20), || {
        r.attempts().len() >= 8
    });
    let a = r.attempts();
    let body = |i: usize| prost::Message::encode_to_vec(&a[i].request);
    assert_eq!(
        body(0),
        body(3),
        "the same request is retried after each 503"
    );
    let gaps: Vec<Duration> = (1..4).map(|i| a[i].at - a[i - 1].at).collect();
    assert!(
        gaps[0] >= Duration::from_millis(90)
            && gaps[1] >= gaps[0]
            && gaps[2] >= Duration::from_millis(350),
        "backoff doubles to its cap: {gaps:?}"
    );
    assert_eq!(body(4), body(5), "a 429 is retried with retry_on_http_429");
    assert!(
        a[5].at - a[4].at >= Duration::from_millis(950),
        "Retry-After is honoured: {:?}",
        a[5].at - a[4].at
    );
    assert_eq!(a[6].status, 400);
    assert_ne!(body(6), body(7), "a 400 is dropped, never retried");
    assert_eq!(a[0].header("x-scope-orgid"), Some("team-a"));
    assert_eq!(a[0].header("authorization"), Some("Bearer s3cret-token"));
    let metric = |m: &str| {
        client::metric(
            &w.base(),
            &format!("{m}{{remote_name=\"central\",url=\"{}\"{}", r.url(), "}"),
        )
    };
    let labelled = |m: &str, code: u16| {
        client::metric(
            &w.base(),
            &format!(
                "{m}{{remote_name=\"central\",url=\"{}\",code=\"{code}\"}}",
                r.url()
            ),
        )
    };
    assert_eq!(
        labelled("waggle_remote_storage_failed_attempts_total", 503),
        3.0
    );
    assert_eq!(
        labelled("waggle_remote_storage_failed_attempts_total", 429),
        1.0
    );
    assert_eq!(
        labelled("waggle_remote_storage_refused_requests_total", 400),
        1.0
    );
    assert_eq!(
        metric("waggle_remote_storage_samples_failed_total"),
        a[6].samples() as f64
    );
    assert!(
        metric("waggle_remote_storage_samples_retried_total")
            >= (3 * a[0].samples() + a[4].samples()) as f64
    );
    let text = waggle_tests::prom::client()
        .get(format!("{}/metrics", w.base()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!text.contains("s3cret"), "the token is never shown");
}

#[test]
fn a_receiver_down_for_30_seconds_loses_nothing_within_capacity() {
    let Some(p) = prometheus() else { return };
    let r = Receiver::start(Some(format!("{}/api/v1/write", p.base())));
    let w = Waggle::start(&["--remote-write-url", &r.url()]).unwrap();
    let started = Instant::now();
    let mut down_at = None;
    while started.elapsed() < Duration::from_secs(42) {
        traffic(&w, 3, 1);
        let t = started.elapsed();
        if t > Duration::from_secs(4) && down_at.is_none() {
            r.set(Action::HangUp);
            down_at = Some(Instant::now());
        }
        if down_at.is_some_and(|d| d.elapsed() > Duration::from_secs(30)) {
            r.set(Action::Forward);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let total = scalar(&w.base(), TOTAL).unwrap();
    eventually("Prometheus to catch up", Duration::from_secs(20), || {
        scalar(&p.base(), TOTAL) == Some(total)
    });
    assert!(
        r.attempts().iter().any(|a| a.status == 0),
        "the receiver really was down"
    );
    assert!(
        r.attempts()
            .iter()
            .filter(|a| a.status != 0)
            .all(|a| a.status == 204),
        "no request was refused: the backlog went in order"
    );
    assert_steps_in_order(&r, 1000);
    assert_eq!(
        scalar(&p.base(), r#"sum(resets(istio_requests_total[5m]))"#),
        Some(0.0)
    );
    let dropped = client::metric(&w.base(), &format!("waggle_remote_storage_samples_dropped_total{{remote_name=\"{0}\",url=\"{0}\",reason=\"backlog\"}}", r.url()));
    assert_eq!(dropped, 0.0, "within capacity nothing is dropped");
}

#[test]
fn a_backlog_past_capacity_drops_its_oldest_steps_and_counts_them() {
    let r = Receiver::start(None);
    let dir = std::env::temp_dir().join(format!("waggle-rw-cap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("waggle.toml");
    std::fs::write(
        &config,
        format!("[[remote_write]]\nname = \"small\"\nurl = \"{}\"\n[remote_write.queue_config]\ncapacity = 150\nmax_shards = 1\nmax_backoff = \"200ms\"\n", r.url()),
    )
    .unwrap();
    let w = Waggle::start(&["--config", config.to_str().unwrap()]).unwrap();
    traffic(&w, 2, 0);
    eventually("a first delivery", Duration::from_secs(10), || {
        r.attempts().iter().any(|a| a.status == 204)
    });
    r.set(Action::HangUp);
    for _ in 0..24 {
        traffic(&w, 2, 0);
        std::thread::sleep(Duration::from_millis(250));
    }
    r.set(Action::Forward);
    let series = client::metric(&w.base(), "waggle_series");
    let dropped = || {
        client::metric(&w.base(), &format!("waggle_remote_storage_samples_dropped_total{{remote_name=\"small\",url=\"{}\",reason=\"backlog\"}}", r.url()))
    };
    eventually("the backlog to be cut", Duration::from_secs(15), || {
        dropped() > 0.0
    });
    assert_eq!(
        dropped() % series,
        0.0,
        "whole steps of every series are dropped"
    );
    let newest = || {
        r.delivered()
            .values()
            .filter_map(|s| s.last().map(|x| x.0))
            .max()
            .unwrap_or(0)
    };
    eventually(
        "fresh steps after the outage",
        Duration::from_secs(15),
        || newest() > client::now_ms() - 5000,
    );
}

#[test]
fn coarse_resolution_keeps_every_final_value_and_ends_series_with_stale_markers() {
    let r = Receiver::start(None);
    let dir = std::env::temp_dir().join(format!("waggle-rw-res-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("waggle.toml");
    std::fs::write(
        &config,
        format!(
            "[[remote_write]]\nurl = \"{}\"\nresolution = \"3s\"\n",
            r.url()
        ),
    )
    .unwrap();
    let w = Waggle::start(&["--config", config.to_str().unwrap(), "--stale-after", "2s"]).unwrap();
    for _ in 0..8 {
        traffic(&w, 1, 0);
        std::thread::sleep(Duration::from_millis(500));
    }
    eventually("stale markers", Duration::from_secs(20), || {
        r.delivered()
            .values()
            .any(|s| s.last().is_some_and(|x| x.1.to_bits() == prom::STALE_NAN))
    });
    // Eight requests, the last ones in no step of the 3 s grid: they arrive all the same.
    let final_total = 8.0;
    for (series, samples) in r.delivered() {
        if !series.contains("istio_requests_total") || !series.contains("reporter=\"destination\"")
        {
            continue;
        }
        let n = samples.len();
        for (i, (t, v)) in samples.iter().enumerate() {
            let before_stale = samples
                .get(i + 1)
                .is_some_and(|x| x.1.to_bits() == prom::STALE_NAN);
            assert!(
                t % 3000 == 0 || v.to_bits() == prom::STALE_NAN || before_stale,
                "{series}: {t}"
            );
        }
        let last_value = samples
            .iter()
            .rev()
            .find(|x| x.1.to_bits() != prom::STALE_NAN)
            .map(|x| x.1);
        assert_eq!(
            last_value,
            Some(final_total),
            "{series}: the final count arrives ({n} samples)"
        );
    }
}

#[test]
fn remote_written_samples_are_forwarded_only_when_asked() {
    let (plain, with) = (Receiver::start(None), Receiver::start(None));
    let dir = std::env::temp_dir().join(format!("waggle-rw-inc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("waggle.toml");
    std::fs::write(
        &config,
        format!("[[remote_write]]\nurl = \"{}\"\n[[remote_write]]\nurl = \"{}\"\ninclude_received = true\n", plain.url(), with.url()),
    )
    .unwrap();
    let w = Waggle::start(&["--config", config.to_str().unwrap()]).unwrap();
    let now = client::now_ms();
    let body = client::rw_body(vec![client::ts(
        "checkout_orders_total",
        &[("shop", "eu")],
        &[(now - 500, 42.0)],
    )]);
    assert_eq!(
        post(&w.ingest_base(), "/api/v1/write", body, &[client::PROTOBUF]).0,
        204
    );
    traffic(&w, 1, 0);
    eventually(
        "the KPI at the destination that asked for it",
        Duration::from_secs(10),
        || {
            with.delivered()
                .iter()
                .any(|(k, v)| k.contains("checkout_orders_total") && v.contains(&(now - 500, 42.0)))
        },
    );
    eventually("mesh series at both", Duration::from_secs(10), || {
        !plain.delivered().is_empty()
    });
    assert!(
        !plain
            .delivered()
            .keys()
            .any(|k| k.contains("checkout_orders_total")),
        "not written again by default"
    );
}
