//! Turns the attributes of one finished request into an [`EventRef`], borrowing every string.

use waggle_wire::{EventRef, MeshKind, Protocol, Reporter, Service};

use crate::attributes::{cut, Attr, Source, SourceExt};
use crate::flags;
use crate::identity::{self, Local, Peer};

/// What recording needs besides the attributes.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub capture_path: bool,
    pub max_path_len: usize,
}

/// `xds.listener_direction`: 1 inbound, 2 outbound. Read per request: one filter
/// configuration serves both directions.
pub fn reporter(a: &dyn Source) -> Reporter {
    match a.int(Attr::Direction) {
        Some(1) => Reporter::Destination,
        _ => Reporter::Source,
    }
}

/// Everything about a request that is not in its attributes.
pub struct Known<'a> {
    pub reporter: Reporter,
    pub local: &'a Local,
    pub peer: &'a Peer,
    /// The cluster's `istio.services` entry, when it has one.
    pub service: Option<&'a Service>,
    /// Kuma: the inbound listener's `kuma.io/service` (a dataplane may have several inbounds).
    pub inbound_service: Option<&'a str>,
    pub options: Options,
}

/// Builds the event; a missing attribute yields a neutral value, never an error.
/// `flags` is the caller's buffer for the rendered response flags.
pub fn record<'a>(
    a: &'a dyn Source,
    k: &Known<'a>,
    now_unix_ns: u64,
    flags: &'a mut String,
) -> EventRef<'a> {
    let reporter = k.reporter;
    let duration_ns = a.uint(Attr::Duration).unwrap_or(0);
    let start_ns = a
        .uint(Attr::Time)
        .unwrap_or_else(|| now_unix_ns.saturating_sub(duration_ns));
    let protocol = match a.str(Attr::ContentType) {
        Some(ct) if ct.starts_with("application/grpc") => Protocol::Grpc,
        _ => Protocol::Http,
    };
    let grpc_status = match protocol {
        Protocol::Grpc => a.uint(Attr::GrpcStatus).and_then(|g| u32::try_from(g).ok()),
        Protocol::Http => None,
    };
    // Kuma's stats name the cluster on both sides (inbound: the local app's `localhost:<port>`).
    let upstream_cluster = match (reporter, k.local.mesh) {
        (Reporter::Source, _) | (_, MeshKind::Kuma) => a.str(Attr::ClusterName).unwrap_or_default(),
        (Reporter::Destination, MeshKind::Istio) => "",
    };
    let mut service = match k.service {
        Some(s) => s.as_ref(),
        None => identity::authority_service(a.str(Attr::Host), reporter, k.local),
    };
    if let (Reporter::Destination, Some(name)) = (reporter, k.inbound_service) {
        service.name = name;
        service.namespace = &k.local.workload.namespace;
    }
    flags::write_short(a.uint(Attr::Flags).unwrap_or(0), flags);
    EventRef {
        reporter,
        start_unix_us: start_ns / 1000,
        duration_us: duration_ns / 1000,
        response_code: a
            .uint(Attr::Code)
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(0),
        grpc_status,
        response_flags: flags,
        protocol,
        method: a.str(Attr::Method).unwrap_or("unknown"),
        request_bytes: a.uint(Attr::RequestSize).unwrap_or(0),
        response_bytes: a.uint(Attr::ResponseSize).unwrap_or(0),
        peer: k.peer.workload.as_ref(),
        local_principal: &k.peer.local_principal,
        peer_principal: &k.peer.peer_principal,
        service,
        upstream_cluster,
        trace_id: trace_id(a),
        path: k
            .options
            .capture_path
            .then(|| path(a, k.options.max_path_len))
            .flatten(),
    }
}

/// The trace id of W3C `traceparent` or B3 `x-b3-traceid`, when well formed (hex, either case).
fn trace_id(a: &dyn Source) -> Option<&str> {
    let valid = |id: &str| {
        matches!(id.len(), 16 | 32)
            && id.bytes().all(|b| b.is_ascii_hexdigit())
            && id.bytes().any(|b| b != b'0')
    };
    if let Some(tp) = a.str(Attr::Traceparent) {
        // version "-" trace-id "-" parent-id "-" flags
        let mut parts = tp.split('-');
        if let (Some(_), Some(id)) = (parts.next(), parts.next()) {
            if id.len() == 32 && valid(id) {
                return Some(id);
            }
        }
    }
    a.str(Attr::B3TraceId).filter(|id| valid(id))
}

fn path(a: &dyn Source, max: usize) -> Option<&str> {
    let full = a.str(Attr::UrlPath).or_else(|| a.str(Attr::Path))?;
    let no_query = full.split(['?', '#']).next().unwrap_or(full);
    Some(cut(no_query, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::Lazy;
    use crate::properties::fake::Map;
    use waggle_wire::Event;

    /// Records from `m` as the filter does without caches, then encodes and decodes the
    /// event: what the backend receives.
    fn record(m: &Map, local: &Local, options: Options, now: u64) -> Event {
        let a = Lazy::new(m);
        let cluster = a.str(Attr::ClusterName);
        let hints = identity::Hints {
            cluster,
            tags_header: None,
        };
        let peer = identity::read_peer(m, reporter(&a), local.mesh, hints);
        let service = identity::cluster_service(m);
        let k = Known {
            reporter: reporter(&a),
            local,
            peer: &peer,
            service: service.as_ref(),
            inbound_service: None,
            options,
        };
        let mut flags = String::new();
        let e = super::record(&a, &k, now, &mut flags);
        let mut b = waggle_wire::BatchBuilder::new();
        b.push_ref(&e);
        let batch = waggle_wire::decode(&b.finish(&Default::default())).unwrap();
        let event = batch.events().next().unwrap();
        event
    }

    const OPTS: Options = Options {
        capture_path: false,
        max_path_len: 12,
    };

    fn inbound() -> Map {
        let mut m = Map::default();
        m.set_int(&["xds", "listener_direction"], 1)
            .set_int(&["request", "time"], 1_767_225_600_123_456_789)
            .set_int(&["request", "duration"], 12_345_678)
            .set_int(&["response", "code"], 503)
            .set_int(&["response", "flags"], 0b10_0010)
            .set(&["request", "method"], "POST")
            .set_int(&["request", "total_size"], 321)
            .set_int(&["response", "total_size"], 4321)
            .set(&["request", "host"], "reviews:9080")
            .set(&["request", "path"], "/api/v1/items/42?token=secret")
            .set(
                &["request", "headers", "traceparent"],
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            );
        m
    }

    #[test]
    fn records_every_field_of_an_inbound_request() {
        let local = Local {
            workload: waggle_wire::sample::workload("reviews-v1", "bookinfo", "reviews", "v1"),
            mesh_id: "m".into(),
            mesh: MeshKind::Istio,
        };
        let e = record(&inbound(), &local, OPTS, 0);
        assert_eq!(e.reporter, Reporter::Destination);
        assert_eq!(e.start_unix_us, 1_767_225_600_123_456);
        assert_eq!(e.duration_us, 12_345);
        assert_eq!(e.response_code, 503);
        assert_eq!(e.response_flags, "UH,UF");
        assert_eq!(
            (e.method.as_str(), e.request_bytes, e.response_bytes),
            ("POST", 321, 4321)
        );
        assert_eq!(e.protocol, Protocol::Http);
        assert_eq!(e.grpc_status, None);
        assert_eq!(
            e.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(e.path, None, "path capture is off by default");
        assert_eq!(
            e.upstream_cluster, "",
            "inbound requests have no upstream cluster"
        );
        assert_eq!(
            (e.service.name.as_str(), e.service.namespace.as_str()),
            ("reviews", "bookinfo")
        );
    }

    #[test]
    fn outbound_grpc_with_b3_and_path() {
        let mut m = inbound();
        m.set_int(&["xds", "listener_direction"], 2)
            .set(
                &["request", "headers", "content-type"],
                "application/grpc+proto",
            )
            .set_int(&["response", "grpc_status"], 14)
            .set(
                &["xds", "cluster_name"],
                "outbound|9080||ratings.bookinfo.svc.cluster.local",
            )
            .set(&["request", "headers", "traceparent"], "garbage")
            .set(&["request", "headers", "x-b3-traceid"], "80F198EE56343BA8");
        let opts = Options {
            capture_path: true,
            ..OPTS
        };
        let e = record(&m, &Local::default(), opts, 0);
        assert_eq!(e.reporter, Reporter::Source);
        assert_eq!((e.protocol, e.grpc_status), (Protocol::Grpc, Some(14)));
        assert_eq!(
            e.upstream_cluster,
            "outbound|9080||ratings.bookinfo.svc.cluster.local"
        );
        assert_eq!(e.trace_id.as_deref(), Some("80f198ee56343ba8"));
        assert_eq!(
            e.path.as_deref(),
            Some("/api/v1/item"),
            "query stripped, then capped at 12 bytes"
        );
    }

    #[test]
    fn nothing_readable_gives_neutral_values() {
        let e = record(&Map::default(), &Local::default(), OPTS, 5_000_000_000);
        assert_eq!(e.reporter, Reporter::Source);
        assert_eq!(
            (e.response_code, e.duration_us, e.start_unix_us),
            (0, 0, 5_000_000)
        );
        assert_eq!(e.response_flags, "-");
        assert_eq!(e.method, "unknown");
        assert_eq!(e.peer.workload, "unknown");
        assert_eq!(e.trace_id, None);
    }

    #[test]
    fn invalid_trace_ids_are_ignored() {
        for (tp, b3) in [
            ("00-zz-01-01", "xyz"),
            (
                "00-00000000000000000000000000000000-0-1",
                "0000000000000000",
            ),
        ] {
            let mut m = Map::default();
            m.set(&["request", "headers", "traceparent"], tp)
                .set(&["request", "headers", "x-b3-traceid"], b3);
            assert_eq!(trace_id(&Lazy::new(&m)), None, "{tp} {b3}");
        }
    }
}
