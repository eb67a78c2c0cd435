//! Remote write out: samples per second on one core through the encoder (reading the store,
//! encoding `WriteRequest`s, snappy), bytes per sample on the wire, and the same requests
//! sent to a local Prometheus 2.42.

use std::time::Instant;

use anyhow::{Context as _, Result};
use waggle::db::Lock;
use waggle::remote_write::collect;
use waggle::remote_write::config::{Auth, Destination, Queue};

fn destination() -> Destination {
    Destination {
        name: "bench".into(),
        url: String::new(),
        headers: Vec::new(),
        auth: Auth::None,
        external_labels: vec![
            ("cluster".into(), "bench".into()),
            ("waggle_replica".into(), "waggle-0".into()),
        ],
        remote_timeout: std::time::Duration::from_secs(30),
        resolution_ms: 1000,
        include_received: false,
        queue: Queue::default(),
    }
}

struct Encoded {
    samples_per_s: f64,
    wire_bytes: f64,
    raw_bytes: f64,
}

/// Encodes `rounds` windows of `steps` steps each; (samples/s median, wire and raw bytes per sample).
/// `walk_back` reads older windows round after round (an outage's backlog, further into sealed
/// chunks); without it every round reads the newest window, as the steady-state sender does.
fn encode(lock: &Lock, end_ms: i64, steps: i64, rounds: i64, walk_back: bool) -> Encoded {
    let dest = destination();
    let (mut rates, mut wire, mut raw, mut n) = (Vec::new(), 0usize, 0usize, 0usize);
    for r in 0..rounds {
        let to = if walk_back {
            end_ms - r * steps * 1000
        } else {
            end_ms
        };
        let t = Instant::now();
        let c = collect::collect(lock, &dest, (to - steps * 1000, to), end_ms, 1);
        rates.push(c.samples as f64 / t.elapsed().as_secs_f64());
        n += c.samples;
        for req in c.shards.iter().flatten() {
            wire += req.body.len();
            raw += req.raw_bytes;
        }
    }
    Encoded {
        samples_per_s: super::stats(rates).1,
        wire_bytes: wire as f64 / n.max(1) as f64,
        raw_bytes: raw as f64 / n.max(1) as f64,
    }
}

pub fn section(quick: bool) -> Result<String> {
    let series = if quick { 2_000 } else { 10_000 };
    let now = waggle::api::now_ms();
    let end = now - now.rem_euclid(1000);
    let lock = Lock::new(super::filled_store(series, 300, end));
    let rounds = if quick { 5 } else { 20 };
    let steady = encode(&lock, end, 1, rounds, false);
    let catchup = encode(&lock, end, 15, rounds.min(10), true);

    // The same requests delivered to Prometheus, one connection, in order, wall time.
    let prom_bin =
        crate::prom::binary().context("no prometheus binary: scripts/setup installs it")?;
    let p = crate::prom::Prometheus::start(&prom_bin)?;
    let http = reqwest::blocking::Client::new();
    let url = format!("{}/api/v1/write", p.base());
    let dest = destination();
    let (mut sent, t) = (0usize, Instant::now());
    for s in (0..rounds.min(30)).rev() {
        let to = end - s * 1000;
        let c = collect::collect(&lock, &dest, (to - 1000, to), end, 1);
        for req in c.shards.iter().flatten() {
            let r = http
                .post(&url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .body(req.body.clone())
                .send()?;
            anyhow::ensure!(
                r.status().is_success(),
                "Prometheus answered {}",
                r.status()
            );
            sent += req.samples;
        }
    }
    let delivered = sent as f64 / t.elapsed().as_secs_f64();
    Ok(format!(
        "## Remote write out\n\n\
         {series} series of Istio-shaped labels (11 labels, plus `cluster` and `waggle_replica` added), read from the store as the sender reads it, encoded as `WriteRequest`s of at most 500 samples and snappy-compressed, on one core; the median of {rounds} windows.\n\n\
         | window | samples/s per core | bytes per sample on the wire (snappy) | uncompressed |\n|---|---|---|---|\n\
         | one step per series, the newest (steady state, a round per second) | {:.0} | {:.1} | {:.1} |\n\
         | fifteen steps per series, walking back (catching up after an outage) | {:.0} | {:.1} | {:.1} |\n\n\
         Encoded and delivered to a local Prometheus 2.42 (`--web.enable-remote-write-receiver`), one request at a time on one connection, Prometheus on the other core: {delivered:.0} samples/s wall.\n\n\
         Goal: 1M samples/s per core. In the steady state every sample carries its series' whole label set (as Prometheus 2.42's sender sends it), so the labels, not the samples, are what is encoded and compressed; a round that holds several steps of a series (catching up, or a coarser `resolution`) writes the labels once for all of them.\n",
        steady.samples_per_s, steady.wire_bytes, steady.raw_bytes, catchup.samples_per_s, catchup.wire_bytes, catchup.raw_bytes
    ))
}
