//! Deterministic, realistic events for tests and benchmarks.

use crate::{Event, Header, Protocol, Reporter, Service, Workload};

/// A tiny xorshift generator: reproducible across platforms, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }
}

pub fn workload(name: &str, namespace: &str, app: &str, version: &str) -> Workload {
    Workload {
        workload: name.into(),
        namespace: namespace.into(),
        app: app.into(),
        version: version.into(),
        canonical_service: app.into(),
        canonical_revision: version.into(),
        cluster: "Kubernetes".into(),
    }
}

/// The header of a batch sent by the `reviews-v1` sidecar.
pub fn header(sequence: u64) -> Header {
    Header {
        vm_id: 7,
        sequence,
        dropped: 0,
        local: workload("reviews-v1", "bookinfo", "reviews", "v1"),
        mesh_id: "mesh".into(),
        mesh: crate::MeshKind::Istio,
    }
}

/// What an inbound listener of `reviews-v1` sees in one second at `n` requests per second:
/// two callers, two methods, mostly 200s with some 404s and 503s, durations from 1 ms to
/// 300 ms, and W3C trace ids when `traced`.
pub fn inbound(n: usize, seed: u64, traced: bool) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    let productpage = workload("productpage-v1", "bookinfo", "productpage", "v1");
    let ratings = workload("ratings-v1", "bookinfo", "ratings", "v1");
    let service = Service {
        host: "reviews.bookinfo.svc.cluster.local".into(),
        name: "reviews".into(),
        namespace: "bookinfo".into(),
    };
    let t0 = 1_767_225_600_000_000u64; // 2026-01-01T00:00:00Z
    let gap = 1_000_000 / n.max(1) as u64;
    (0..n)
        .map(|i| {
            let peer = if rng.next_u64() % 10 < 2 {
                &ratings
            } else {
                &productpage
            };
            let roll = rng.range(0, 100);
            let (code, flags) = match roll {
                0..=1 => (503, "UF"),
                2..=4 => (404, "-"),
                _ => (200, "-"),
            };
            Event {
                reporter: Reporter::Destination,
                start_unix_us: t0 + i as u64 * gap + rng.range(0, gap),
                duration_us: 1_000 + rng.range(0, 30_000) * rng.range(1, 10),
                response_code: code,
                grpc_status: None,
                response_flags: flags.into(),
                protocol: Protocol::Http,
                method: if roll.is_multiple_of(10) {
                    "POST"
                } else {
                    "GET"
                }
                .into(),
                request_bytes: rng.range(200, 900),
                response_bytes: rng.range(300, 5_000),
                local_principal: "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews".into(),
                peer_principal: format!(
                    "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-{}",
                    peer.app
                ),
                peer: peer.clone(),
                service: service.clone(),
                upstream_cluster: String::new(),
                trace_id: traced.then(|| format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())),
                path: None,
            }
        })
        .collect()
}
