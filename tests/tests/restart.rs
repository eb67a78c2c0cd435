//! Restarts of the real `waggle` binary on the same `--data-dir`: SIGKILL during traffic
//! loses nothing acknowledged and counters go on (at waggle and at a remote-write receiver),
//! SIGTERM loses nothing, and unusable files are moved aside with a reason, never a panic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use waggle_tests::client::{self, JSON};
use waggle_tests::process::Serve;
use waggle_tests::prom::{self, Prometheus};
use waggle_tests::receiver::Receiver;

const TOTAL: &str = r#"sum(istio_requests_total{reporter="destination"})"#;

fn binary() -> std::path::PathBuf {
    waggle_tests::process::binary("debug").expect(
        "the waggle binary is missing: cargo build -p waggle --bin waggle (scripts/test does)",
    )
}

fn data_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("waggle-restart-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn events(n: usize) -> Vec<u8> {
    let e = r#"{"workload":"podinfo","namespace":"test","response_code":200,"duration_ms":20}"#;
    format!("[{}]", vec![e; n].join(",")).into_bytes()
}

/// Posts 5 events every 50 ms until stopped; counts what was acknowledged.
fn sender(
    ingest: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        while !stop.load(Relaxed) {
            let r = http
                .post(format!("{ingest}/v1/events"))
                .header(JSON.0, JSON.1)
                .body(events(5))
                .send();
            if r.is_ok_and(|r| r.status() == 202) {
                acked.fetch_add(5, Relaxed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

#[test]
fn sigkill_during_traffic_loses_nothing_acknowledged_and_counters_go_on() {
    let prom_bin = prom::binary();
    if prom_bin.is_none() && std::env::var_os("CI").is_some() {
        panic!("CI must run the restart test with Prometheus");
    }
    let p = prom_bin.map(|b| Prometheus::start(&b).unwrap());
    let vm = waggle_tests::victoria::binary()
        .map(|b| waggle_tests::victoria::VictoriaMetrics::start(&b).unwrap());
    let receiver = p
        .as_ref()
        .map(|p| Receiver::start(Some(format!("{}/api/v1/write", p.base()))));
    let dir = data_dir("kill");
    let mut args = vec![
        "--data-dir".to_string(),
        dir.display().to_string(),
        "--snapshot-interval".into(),
        "2s".into(),
    ];
    if let Some(r) = &receiver {
        args.extend(["--remote-write-url".into(), r.url()]);
    }
    if let Some(vm) = &vm {
        args.extend(["--remote-write-url".into(), vm.write_url()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut w = Serve::start(&binary(), &args).unwrap();
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let t = sender(w.ingest_base(), stop.clone(), acked.clone());
    std::thread::sleep(Duration::from_millis(5500));
    w.kill();
    let acked_at_kill = acked.load(Relaxed);
    let restarted = Instant::now();
    w.restart().unwrap();
    let ready_after = restarted.elapsed();
    // Ready means restored: the first answer already holds everything acknowledged.
    let total = client::value(&w.base(), TOTAL).unwrap_or(0.0);
    let acked_after = acked.load(Relaxed);
    assert!(
        total >= acked_at_kill as f64 && total <= acked_after as f64,
        "{total} counted; {acked_at_kill} acknowledged before the kill, {acked_after} by now (ready after {ready_after:?})"
    );
    assert!(
        w.log_text().contains("Checkpoint restored"),
        "{}",
        w.log_text()
    );
    let rate = client::value(
        &w.base(),
        r#"sum(rate(istio_requests_total{reporter="destination",destination_workload=~"podinfo"}[1m]))"#,
    );
    assert!(
        rate.is_some_and(|r| r > 0.0),
        "Flagger's window answers at once: {rate:?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Relaxed);
    t.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let total = client::value(&w.base(), TOTAL).unwrap();
    assert_eq!(
        total,
        acked.load(Relaxed) as f64,
        "every acknowledged event is counted once"
    );
    assert_eq!(
        client::value(&w.base(), "sum(resets(istio_requests_total[5m]))"),
        Some(0.0),
        "no counter reset at waggle"
    );
    if let (Some(p), Some(r)) = (&p, &receiver) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while client::value(&p.base(), TOTAL) != Some(total) {
            assert!(
                Instant::now() < deadline,
                "Prometheus has {:?} of {total}",
                client::value(&p.base(), TOTAL)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            client::value(&p.base(), "sum(resets(istio_requests_total[5m]))"),
            Some(0.0),
            "no counter reset at the receiver"
        );
        assert!(
            r.attempts()
                .iter()
                .all(|a| a.status == 204 || a.status == 0),
            "nothing refused as out of order or duplicate"
        );
        // Progress survived: the restart resumed after the last step acknowledged, not from scratch.
        if let Some(vm) = &vm {
            let deadline = Instant::now() + Duration::from_secs(15);
            while client::value(&vm.base(), TOTAL) != Some(total) {
                assert!(
                    Instant::now() < deadline,
                    "VictoriaMetrics has {:?} of {total}",
                    client::value(&vm.base(), TOTAL)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            assert_eq!(
                client::value(&vm.base(), "sum(resets(istio_requests_total[5m]))"),
                Some(0.0),
                "no counter reset at VictoriaMetrics"
            );
        }
        let per_series = r.delivered();
        let (series, samples) = per_series.iter().next().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for (t, _) in samples {
            assert!(seen.insert(*t), "{series}: step {t} sent twice");
        }
    }
}

#[test]
fn sigterm_loses_nothing_and_leaves_a_checkpoint() {
    let dir = data_dir("term");
    let args = [
        "--data-dir",
        dir.to_str().unwrap(),
        "--snapshot-interval",
        "1h",
    ];
    let mut w = Serve::start(&binary(), &args).unwrap();
    for _ in 0..10 {
        let (status, _) = client::post(&w.ingest_base(), "/v1/events", events(7), &[JSON]);
        assert_eq!(status, 202);
    }
    assert!(w.terminate(Duration::from_secs(20)).unwrap().success());
    assert!(dir.join("snapshot").is_file());
    w.restart().unwrap();
    assert_eq!(client::value(&w.base(), TOTAL), Some(70.0));
    assert!(
        w.log_text().contains("records_replayed=0"),
        "the final checkpoint held everything:\n{}",
        w.log_text()
    );
}

#[test]
fn unusable_files_are_moved_aside_with_their_reason() {
    let dir = data_dir("bad");
    let d = dir.to_str().unwrap().to_owned();
    let mut w = Serve::start(&binary(), &["--data-dir", &d, "--snapshot-interval", "1h"]).unwrap();
    assert_eq!(
        client::post(&w.ingest_base(), "/v1/events", events(4), &[JSON]).0,
        202
    );
    w.terminate(Duration::from_secs(20)).unwrap();

    // A checkpoint with a flipped byte: refused by name, set aside, the server starts.
    let snap = dir.join("snapshot");
    let mut bytes = std::fs::read(&snap).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&snap, &bytes).unwrap();
    w.restart().unwrap();
    let log = w.log_text();
    assert!(
        log.contains("the checkpoint is unusable") && log.contains("corrupt"),
        "{log}"
    );
    assert!(std::fs::read_dir(&dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("snapshot.bad-")));

    // A torn tail on the log after a crash: replayed up to it.
    assert_eq!(
        client::post(&w.ingest_base(), "/v1/events", events(3), &[JSON]).0,
        202
    );
    w.kill();
    let (_, newest) = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
        .max()
        .unwrap();
    let mut wal = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    std::io::Write::write_all(&mut wal, &[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(wal);
    w.restart().unwrap();
    assert!(w.log_text().contains("torn record"), "{}", w.log_text());
    assert_eq!(
        client::value(&w.base(), TOTAL),
        Some(3.0),
        "the records before the torn tail were replayed"
    );
    w.terminate(Duration::from_secs(20)).unwrap();

    // Another resolution: everything written with the old one is set aside.
    let mut other = Serve::start(&binary(), &["--data-dir", &d, "--resolution", "2s"]).unwrap();
    let log = other.log_text();
    assert!(
        log.contains("resolution_ms=1000") && log.contains("resolution_ms=2000"),
        "{log}"
    );
    assert_eq!(
        client::value(&other.base(), TOTAL),
        None,
        "nothing foreign was read"
    );
    other.terminate(Duration::from_secs(20)).unwrap();

    // Not a snapshot at all.
    std::fs::write(dir.join("snapshot"), b"hello").unwrap();
    let other = Serve::start(&binary(), &["--data-dir", &d, "--resolution", "2s"]).unwrap();
    assert!(
        other.log_text().contains("not a waggle snapshot"),
        "{}",
        other.log_text()
    );
}
