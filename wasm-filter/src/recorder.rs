//! Per-VM recording: the caches of what does not change per request (the peer of a
//! connection or endpoint, the service of a cluster) in front of the outbox.

use waggle_wire::{MeshKind, Reporter, Service};

use crate::attributes::{Attr, Source, SourceExt};
use crate::cache::{self, Bounded};
use crate::identity::{self, Hints, Local, Peer};
use crate::kuma::{self, Tags};
use crate::outbox::Outbox;
use crate::properties::Properties;
use crate::record::{self, Known, Options};

/// Connections one worker keeps the peer of; a connection evicted early is only read again.
pub const CONNECTIONS: usize = 1024;
/// Upstream endpoints and clusters kept, each.
pub const ENDPOINTS: usize = 1024;
/// An endpoint's address can pass to another pod, and a cluster's metadata can change with
/// configuration: both are read again after this long.
pub const REFRESH_MS: u64 = 30_000;

/// A cached value and the name it was read for (empty for a connection id), which a hit
/// must match: names are keyed by their hash.
#[derive(Debug)]
struct Entry {
    name: String,
    value: Cached,
}

#[derive(Debug)]
enum Cached {
    /// A downstream connection: its listener's direction, and inbound, the peer and (Kuma)
    /// the listener's `kuma.io/service`.
    Connection {
        reporter: Reporter,
        peer: Option<Peer>,
        service: Option<String>,
    },
    /// An upstream endpoint's peer.
    Peer(Peer),
    Service(Option<Service>),
}

/// The live entry of `cache` for `name`, read with `read` when there is none.
fn named<'c>(
    cache: &'c mut Bounded<Entry>,
    name: &str,
    now_ms: u64,
    read: impl FnOnce() -> Cached,
) -> Option<&'c Entry> {
    cache.get_or_insert_with(
        cache::key(name),
        now_ms,
        |e| e.name == name,
        || Entry {
            name: name.to_owned(),
            value: read(),
        },
    )
}

pub struct Recorder {
    pub outbox: Outbox,
    pub local: Local,
    pub options: Options,
    /// Inbound: by `connection.id`, a process-wide counter Envoy never reuses.
    connections: Bounded<Entry>,
    /// Outbound: by `upstream.address`, the endpoint the request went to.
    endpoints: Bounded<Entry>,
    /// By `xds.cluster_name`.
    clusters: Bounded<Entry>,
    flags: String,
    /// Set once a Kuma inbound listener's tags completed the local identity.
    refined: bool,
}

impl Recorder {
    pub fn new(outbox: Outbox, local: Local, options: Options) -> Self {
        Self {
            outbox,
            local,
            options,
            connections: Bounded::new(CONNECTIONS, None),
            endpoints: Bounded::new(ENDPOINTS, Some(REFRESH_MS)),
            clusters: Bounded::new(ENDPOINTS, Some(REFRESH_MS)),
            flags: String::new(),
            refined: false,
        }
    }

    /// Records one finished request from its attributes `a`; `props` answers what the caches
    /// do not hold yet. Returns whether the event was kept (false: the buffer is full).
    /// `tags_header` is Kuma's `x-kuma-tags` as the request arrived, when it was kept.
    pub fn record(
        &mut self,
        a: &dyn Source,
        props: &impl Properties,
        now_ns: u64,
        tags_header: Option<&str>,
    ) -> bool {
        let now_ms = now_ns / 1_000_000;
        let Self {
            outbox,
            local,
            options,
            connections,
            endpoints,
            clusters,
            flags,
            refined,
        } = self;
        let mesh = local.mesh;
        // The direction is the listener's, so it is fixed for a connection, like the peer of
        // an inbound one.
        let connection = a.uint(Attr::ConnectionId).and_then(|id| {
            connections.get_or_insert_with(
                id,
                now_ms,
                |_| true,
                || {
                    let reporter = record::reporter(a);
                    let inbound = reporter == Reporter::Destination;
                    let hints = Hints {
                        cluster: None,
                        tags_header,
                    };
                    let peer = inbound.then(|| identity::read_peer(props, reporter, mesh, hints));
                    let mut service = None;
                    if inbound && mesh == MeshKind::Kuma {
                        if let Some(tags) = props
                            .get(&kuma::LISTENER_TAGS)
                            .map(|b| Tags::from_pairs(&b))
                        {
                            // Zone, app and version are only in the tags: the node lacks them.
                            if !*refined {
                                *refined = true;
                                *local = identity::local_with(props, Some(&tags));
                                outbox.set_local(local);
                            }
                            service = tags.get("kuma.io/service").map(str::to_owned);
                        }
                    }
                    Entry {
                        name: String::new(),
                        value: Cached::Connection {
                            reporter,
                            peer,
                            service,
                        },
                    }
                },
            )
        });
        let (reporter, inbound_peer, inbound_service) = match connection.map(|e| &e.value) {
            Some(Cached::Connection {
                reporter,
                peer,
                service,
            }) => (*reporter, peer.as_ref(), service.as_deref()),
            _ => (record::reporter(a), None, None),
        };
        let cluster = a.str(Attr::ClusterName);
        let hints = Hints {
            cluster,
            tags_header,
        };
        let cached = match reporter {
            Reporter::Destination => inbound_peer,
            Reporter::Source => a
                .str(Attr::UpstreamAddress)
                .and_then(|addr| {
                    named(endpoints, addr, now_ms, || {
                        Cached::Peer(identity::read_peer(props, reporter, mesh, hints))
                    })
                })
                .and_then(|e| match &e.value {
                    Cached::Peer(p) => Some(p),
                    _ => None,
                }),
        };
        let fresh;
        let peer = match cached {
            Some(p) => p,
            None => {
                fresh = identity::read_peer(props, reporter, mesh, hints);
                &fresh
            }
        };
        // No cluster (a direct response, a local reply): no cluster metadata to read. Kuma's
        // clusters carry none of Istio's.
        let service = cluster
            .filter(|_| mesh == MeshKind::Istio)
            .and_then(|c| {
                named(clusters, c, now_ms, || {
                    Cached::Service(identity::cluster_service(props))
                })
            })
            .and_then(|e| match &e.value {
                Cached::Service(s) => s.as_ref(),
                _ => None,
            });
        let known = Known {
            reporter,
            local,
            peer,
            service,
            inbound_service,
            options: *options,
        };
        let event = record::record(a, &known, now_ns, flags);
        outbox.record_ref(&event, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{wanted, Answer};
    use crate::config::Config;
    use crate::metadata::encode_pairs;
    use crate::properties::fake::Map;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    /// Counts this thread's allocations, so tests running beside it do not disturb the count.
    struct Counting;

    // SAFETY: forwards to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
            // SAFETY: the caller's contract is System's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
            // SAFETY: as above.
            unsafe { System.realloc(ptr, layout, size) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    fn allocations() -> u64 {
        ALLOCATIONS.with(Cell::get)
    }

    /// What the proxy holds for the request and its connection: `(attributes, properties)`.
    fn request(inbound: bool) -> (Vec<u8>, Map) {
        let int = |v: i64| v.to_le_bytes().to_vec();
        let attrs: Vec<Vec<u8>> = wanted(false)
            .map(|a| match a {
                Attr::ConnectionId => int(42),
                Attr::Direction => int(if inbound { 1 } else { 2 }),
                Attr::Time => int(1_767_225_600_000_000_000),
                Attr::Duration => int(3_000_000),
                Attr::Code => int(200),
                Attr::Flags => int(1 << 5),
                Attr::Method => b"GET".to_vec(),
                Attr::RequestSize | Attr::ResponseSize => int(100),
                Attr::Host => b"reviews:9080".to_vec(),
                Attr::ContentType => b"application/json".to_vec(),
                Attr::Traceparent => {
                    b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".to_vec()
                }
                Attr::ClusterName => b"outbound|9080||ratings.bookinfo.svc.cluster.local".to_vec(),
                Attr::UpstreamAddress => b"10.0.0.5:9080".to_vec(),
                _ => vec![0],
            })
            .collect();
        let pairs: Vec<(&[u8], &[u8])> = attrs.iter().map(|a| (a.as_slice(), &b""[..])).collect();
        let mut props = Map::default();
        let key = if inbound {
            "downstream_peer"
        } else {
            "upstream_peer"
        };
        props.set(&["filter_state", key, "workload"], "productpage-v1");
        props.set(&["filter_state", key, "namespace"], "bookinfo");
        let service = encode_pairs(&[
            (b"host", b"ratings.bookinfo.svc.cluster.local"),
            (b"name", b"ratings"),
            (b"namespace", b"bookinfo"),
        ]);
        props.set(
            &[
                "xds",
                "cluster_metadata",
                "filter_metadata",
                "istio",
                "services",
            ],
            encode_pairs(&[(&service, b"")]),
        );
        (encode_pairs(&pairs), props)
    }

    #[test]
    fn warm_requests_allocate_nothing_beyond_the_event() {
        let config = Config::parse(br#"{"max_batch_events": 1000, "max_buffer_events": 4000}"#)
            .unwrap()
            .config;
        let attrs: Vec<Attr> = wanted(false).collect();
        for inbound in [true, false] {
            let outbox = Outbox::new(&config, Local::default(), 1);
            let options = Options {
                capture_path: false,
                max_path_len: 256,
            };
            let mut r = Recorder::new(outbox, Local::default(), options);
            let (answer, props) = request(inbound);
            let a = Answer::parse(&answer, &attrs).unwrap();
            for _ in 0..10 {
                assert!(r.record(&a, &props, 1, None));
            }
            let before = allocations();
            for _ in 0..500 {
                assert!(r.record(&a, &props, 1, None));
            }
            assert_eq!(allocations() - before, 0, "inbound {inbound}");
            assert_eq!(r.outbox.stats.recorded, 510);
        }
    }
}
