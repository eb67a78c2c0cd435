//! Who is talking to whom: local identity from node metadata, the peer's from Istio's
//! metadata exchange, principals, and the destination service.

use waggle_wire::{Reporter, Service, Workload};

use crate::properties::{Properties, PropertiesExt, UNKNOWN};

/// The other side and the principals: fixed for a connection inbound, for an endpoint outbound.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Peer {
    pub workload: Workload,
    pub local_principal: String,
    pub peer_principal: String,
}

/// Reads the peer's identity and the principals from the proxy.
pub fn read_peer(p: &impl Properties, reporter: Reporter) -> Peer {
    let (local_principal, peer_principal) = principals(p, reporter);
    Peer {
        workload: peer(p, reporter),
        local_principal,
        peer_principal,
    }
}

/// The sidecar's own identity, read once per VM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Local {
    pub workload: Workload,
    pub mesh_id: String,
}

/// Node metadata, at the `xds` path of Envoy 1.33 and later or the older top-level path.
fn node_meta(p: &impl Properties, key: &[&str]) -> Option<String> {
    let mut path = vec!["xds", "node", "metadata"];
    path.extend_from_slice(key);
    p.string(&path)
        .or_else(|| p.string(path.get(1..).unwrap_or_default()))
}

pub fn local(p: &impl Properties) -> Local {
    let label = |k: &str| node_meta(p, &["LABELS", k]);
    let workload = node_meta(p, &["WORKLOAD_NAME"]);
    let app = label("app");
    // Istio's injector sets the canonical labels; without them it falls back to app, then name.
    let canonical_service = label("service.istio.io/canonical-name")
        .or_else(|| app.clone())
        .or_else(|| workload.clone());
    let version = label("version");
    let canonical_revision = label("service.istio.io/canonical-revision")
        .or_else(|| version.clone())
        .unwrap_or_else(|| "latest".to_owned());
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| UNKNOWN.to_owned());
    Local {
        workload: Workload {
            workload: or_unknown(workload),
            namespace: or_unknown(node_meta(p, &["NAMESPACE"])),
            app: or_unknown(app),
            version: or_unknown(version),
            canonical_service: or_unknown(canonical_service),
            canonical_revision,
            cluster: or_unknown(node_meta(p, &["CLUSTER_ID"])),
        },
        mesh_id: or_unknown(node_meta(p, &["MESH_ID"])),
    }
}

/// Field names of Istio's peer metadata (`WorkloadMetadataObject` and its Struct form).
const PEER_FIELDS: [&str; 7] = [
    "workload",
    "namespace",
    "app",
    "version",
    "service",
    "revision",
    "cluster",
];

/// The peer: the caller on an inbound listener, the callee on an outbound one.
pub fn peer(p: &impl Properties, reporter: Reporter) -> Workload {
    let key = match reporter {
        Reporter::Destination => "downstream_peer",
        Reporter::Source => "upstream_peer",
    };
    // Newest proxies expose `<key>_obj` with field support; 2024-2025 ones a Struct at `<key>`.
    // Probe with the workload field so a missing peer costs two reads, not fourteen.
    let obj = format!("{key}_obj");
    for k in [obj.as_str(), key] {
        if p.string(&["filter_state", k, "workload"]).is_some() {
            let [w, n, a, v, s, r, c] = PEER_FIELDS.map(|f| p.string(&["filter_state", k, f]));
            return peer_workload([w, n, a, v, s, r, c]);
        }
    }
    if reporter == Reporter::Source {
        // The client side knows the endpoint it picked, even when the peer sent no metadata:
        // "workload;namespace;canonical-service;canonical-revision;cluster".
        let path = [
            "xds",
            "upstream_host_metadata",
            "filter_metadata",
            "istio",
            "workload",
        ];
        if let Some(s) = p.string(&path) {
            let mut parts = s.split(';').map(|x| (!x.is_empty()).then(|| x.to_owned()));
            let mut next = || parts.next().flatten();
            let (w, n, s, r, c) = (next(), next(), next(), next(), next());
            return peer_workload([w, n, None, None, s, r, c]);
        }
    }
    peer_workload(Default::default())
}

fn peer_workload([w, n, a, v, s, r, c]: [Option<String>; 7]) -> Workload {
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| UNKNOWN.to_owned());
    Workload {
        workload: or_unknown(w),
        namespace: or_unknown(n),
        app: or_unknown(a),
        version: or_unknown(v),
        canonical_service: or_unknown(s),
        canonical_revision: r.unwrap_or_else(|| "latest".to_owned()),
        cluster: or_unknown(c),
    }
}

/// (local, peer) SPIFFE principals, `unknown` where the connection carries none.
pub fn principals(p: &impl Properties, reporter: Reporter) -> (String, String) {
    let (local, peer) = match reporter {
        Reporter::Destination => (
            p.string(&["filter_state", "io.istio.local_principal"])
                .or_else(|| p.string(&["connection", "uri_san_local_certificate"])),
            p.string(&["filter_state", "io.istio.peer_principal"])
                .or_else(|| p.string(&["connection", "uri_san_peer_certificate"])),
        ),
        Reporter::Source => (
            p.string(&["upstream", "uri_san_local_certificate"]),
            p.string(&["upstream", "uri_san_peer_certificate"]),
        ),
    };
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| UNKNOWN.to_owned());
    (or_unknown(local), or_unknown(peer))
}

/// The destination service from Istio's metadata on the request's cluster, if it has any.
pub fn cluster_service(p: &impl Properties) -> Option<Service> {
    let meta = [
        "xds",
        "cluster_metadata",
        "filter_metadata",
        "istio",
        "services",
    ];
    p.get(&meta)
        .as_deref()
        .and_then(crate::metadata::first_service)
}

/// The destination service when the cluster says nothing: derived from the request's
/// authority (`host`), and on the inbound side completed with the local identity.
pub fn authority_service<'a>(
    host: Option<&'a str>,
    reporter: Reporter,
    local: &'a Local,
) -> Service<&'a str> {
    let host = host.map(strip_port).unwrap_or_default();
    let mut labels = host.split('.').filter(|l| !l.is_empty());
    let name = labels.next();
    let in_cluster = host.contains(".svc");
    let namespace = labels.next().filter(|_| in_cluster);
    let local_side = reporter == Reporter::Destination;
    let (name_default, namespace_default) = if local_side {
        (
            local.workload.canonical_service.as_str(),
            local.workload.namespace.as_str(),
        )
    } else {
        (UNKNOWN, UNKNOWN)
    };
    Service {
        host: if host.is_empty() { UNKNOWN } else { host },
        name: name
            .filter(|_| !local_side || in_cluster)
            .unwrap_or(name_default),
        namespace: namespace.unwrap_or(namespace_default),
    }
}

fn strip_port(host: &str) -> &str {
    // Keep bracketed IPv6 literals whole; only strip a trailing `:digits`.
    match host.rsplit_once(':') {
        Some((h, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !h.ends_with(':') =>
        {
            h
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::fake::Map;

    fn node(m: &mut Map, prefix: &[&'static str]) {
        let p = |k: &[&'static str]| [prefix, &["node", "metadata"], k].concat();
        m.set(&p(&["WORKLOAD_NAME"]), "reviews-v2")
            .set(&p(&["NAMESPACE"]), "bookinfo")
            .set(&p(&["LABELS", "app"]), "reviews")
            .set(&p(&["LABELS", "version"]), "v2")
            .set(&p(&["CLUSTER_ID"]), "Kubernetes")
            .set(&p(&["MESH_ID"]), "mesh1");
    }

    #[test]
    fn local_identity_from_either_node_path() {
        for prefix in [&["xds"][..], &[]] {
            let mut m = Map::default();
            node(&mut m, prefix);
            let l = local(&m);
            assert_eq!(l.workload.workload, "reviews-v2", "{prefix:?}");
            assert_eq!(l.workload.namespace, "bookinfo");
            assert_eq!(l.workload.canonical_service, "reviews", "falls back to app");
            assert_eq!(l.workload.canonical_revision, "v2", "falls back to version");
            assert_eq!(l.workload.cluster, "Kubernetes");
            assert_eq!(l.mesh_id, "mesh1");
        }
    }

    #[test]
    fn canonical_labels_win_and_missing_is_unknown() {
        let mut m = Map::default();
        m.set(
            &[
                "xds",
                "node",
                "metadata",
                "LABELS",
                "service.istio.io/canonical-name",
            ],
            "rev",
        )
        .set(
            &[
                "xds",
                "node",
                "metadata",
                "LABELS",
                "service.istio.io/canonical-revision",
            ],
            "r9",
        );
        let l = local(&m);
        assert_eq!(
            (
                l.workload.canonical_service.as_str(),
                l.workload.canonical_revision.as_str()
            ),
            ("rev", "r9")
        );
        assert_eq!(l.workload.workload, "unknown");
        assert_eq!(l.mesh_id, "unknown");
        assert_eq!(local(&Map::default()).workload.canonical_revision, "latest");
    }

    #[test]
    fn peer_from_struct_obj_endpoint_or_unknown() {
        let mut m = Map::default();
        for (f, v) in PEER_FIELDS.iter().zip([
            "productpage-v1",
            "bookinfo",
            "productpage",
            "v1",
            "productpage",
            "v1",
            "K",
        ]) {
            m.set(&["filter_state", "downstream_peer", f], v);
        }
        let w = peer(&m, Reporter::Destination);
        assert_eq!(
            (
                w.workload.as_str(),
                w.namespace.as_str(),
                w.cluster.as_str()
            ),
            ("productpage-v1", "bookinfo", "K")
        );
        assert_eq!(
            peer(&m, Reporter::Source).workload,
            "unknown",
            "outbound reads upstream_peer"
        );

        let mut m = Map::default();
        m.set(
            &["filter_state", "upstream_peer_obj", "workload"],
            "ratings-v1",
        )
        .set(&["filter_state", "upstream_peer", "workload"], "stale");
        assert_eq!(
            peer(&m, Reporter::Source).workload,
            "ratings-v1",
            "_obj wins"
        );

        let mut m = Map::default();
        m.set(
            &[
                "xds",
                "upstream_host_metadata",
                "filter_metadata",
                "istio",
                "workload",
            ],
            "details-v1;bookinfo;details;v1;Kubernetes",
        );
        let w = peer(&m, Reporter::Source);
        assert_eq!(
            (
                w.workload.as_str(),
                w.canonical_service.as_str(),
                w.app.as_str()
            ),
            ("details-v1", "details", "unknown")
        );

        let w = peer(&Map::default(), Reporter::Destination);
        assert_eq!(w.workload, "unknown");
        assert_eq!(w.canonical_revision, "latest");
    }

    #[test]
    fn principals_by_direction() {
        let mut m = Map::default();
        m.set(&["filter_state", "io.istio.peer_principal"], "spiffe://a")
            .set(&["connection", "uri_san_local_certificate"], "spiffe://b")
            .set(&["upstream", "uri_san_peer_certificate"], "spiffe://c");
        assert_eq!(
            principals(&m, Reporter::Destination),
            ("spiffe://b".into(), "spiffe://a".into())
        );
        assert_eq!(
            principals(&m, Reporter::Source),
            ("unknown".into(), "spiffe://c".into())
        );
    }

    #[test]
    fn service_falls_back_to_authority() {
        let local = Local {
            workload: waggle_wire::sample::workload("reviews-v1", "bookinfo", "reviews", "v1"),
            mesh_id: "m".into(),
        };
        let cases = [
            (
                "reviews.bookinfo.svc.cluster.local:9080",
                Reporter::Source,
                ("reviews.bookinfo.svc.cluster.local", "reviews", "bookinfo"),
            ),
            (
                "example.com",
                Reporter::Source,
                ("example.com", "example", "unknown"),
            ),
            (
                "10.0.0.1:8080",
                Reporter::Destination,
                ("10.0.0.1", "reviews", "bookinfo"),
            ),
            ("[::1]:80", Reporter::Source, ("[::1]", "[::1]", "unknown")),
        ];
        for (host, reporter, (h, n, ns)) in cases {
            let s = authority_service(Some(host), reporter, &local);
            assert_eq!((s.host, s.name, s.namespace), (h, n, ns), "{host}");
        }
        let s = authority_service(None, Reporter::Source, &local);
        assert_eq!(
            (s.host, s.name, s.namespace),
            ("unknown", "unknown", "unknown")
        );
        let s = authority_service(None, Reporter::Destination, &local);
        assert_eq!((s.name, s.namespace), ("reviews", "bookinfo"));
    }
}
