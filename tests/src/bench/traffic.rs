//! Synthetic mesh traffic for the benchmarks: the 10,000-series mesh's workloads and encoded
//! batches of their inbound requests, oldest first.

use waggle_wire::{sample, BatchBuilder, Event, Header};

/// The workloads of the 10,000-series mesh: each gets two response codes.
pub fn workloads(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("svc-{i:03}")).collect()
}

/// One second of traffic to `workload`, `per_second` requests ending in `[t, t+1s)`.
fn second_of_traffic(rng: &mut sample::Rng, t_ms: i64, per_second: usize) -> Vec<Event> {
    let mut base = sample::inbound(per_second, rng.next_u64() | 1, false);
    for (i, e) in base.iter_mut().enumerate() {
        e.duration_us = 1_000 + rng.range(0, 200_000);
        let end = t_ms as u64 * 1000 + (i as u64 * 1_000_000 / per_second as u64);
        e.start_unix_us = end - e.duration_us;
        e.peer = sample::workload("loadtester", "test", "loadtester", "v1");
        e.peer_principal = "spiffe://cluster.local/ns/test/sa/loadtester".into();
        e.response_code = if rng.range(0, 100) < 5 { 503 } else { 200 };
        e.response_flags = "-".into();
        e.method = "GET".into();
    }
    base
}

fn header(workload: &str, seq: u64) -> Header {
    Header {
        vm_id: 1,
        sequence: seq,
        dropped: 0,
        local: sample::workload(workload, "test", workload, "v1"),
        ..sample::header(seq)
    }
}

/// Encoded batches covering `seconds` of traffic for every workload, oldest first.
pub fn traffic(workloads: &[String], seconds: i64, end_ms: i64, per_second: usize) -> Vec<Vec<u8>> {
    let mut rng = sample::Rng::new(7);
    let mut out = Vec::new();
    let mut b = BatchBuilder::new();
    for s in 0..seconds {
        let t = end_ms - (seconds - s) * 1000;
        for (i, w) in workloads.iter().enumerate() {
            for e in second_of_traffic(&mut rng, t, per_second) {
                b.push(&e);
            }
            out.push(b.finish(&header(w, (s as u64) * workloads.len() as u64 + i as u64)));
        }
    }
    out
}
