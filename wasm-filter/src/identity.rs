//! Who is talking to whom: local identity from node metadata, the peer's from Istio's
//! metadata exchange, principals, and the destination service.

use waggle_wire::{MeshKind, Reporter, Service, Workload};

use crate::kuma::{self, Tags};
use crate::properties::{Properties, PropertiesExt, UNKNOWN};
use crate::sources::{self, Lookup, Side, Source};

/// The other side and the principals: fixed for a connection inbound, for an endpoint outbound.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Peer {
    pub workload: Workload,
    pub local_principal: String,
    pub peer_principal: String,
}

/// What the request already told about its peer, besides the proxy's attributes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hints<'a> {
    /// The request's cluster: Kuma names an outbound cluster after its destination.
    pub cluster: Option<&'a str>,
    /// Kuma: the caller's `x-kuma-tags`, kept from the request headers (the inbound route
    /// removes the header before the request is logged).
    pub tags_header: Option<&'a str>,
}

/// Reads the peer's identity and the principals from the proxy.
pub fn read_peer(
    p: &impl Properties,
    reporter: Reporter,
    mesh: MeshKind,
    hints: Hints<'_>,
) -> Peer {
    let (local_principal, peer_principal) = principals(p, reporter);
    Peer {
        workload: peer(p, reporter, mesh, hints),
        local_principal,
        peer_principal,
    }
}

/// The sidecar's own identity, read once per VM (and again once a Kuma inbound listener
/// showed its tags).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Local {
    pub workload: Workload,
    pub mesh_id: String,
    pub mesh: MeshKind,
}

/// A `node` attribute, at the `xds` path of Envoy 1.33 and later or the older top-level path.
fn node(p: &impl Properties, key: &[&str]) -> Option<String> {
    let mut path = vec!["xds", "node"];
    path.extend_from_slice(key);
    p.string(&path)
        .or_else(|| p.string(path.get(1..).unwrap_or_default()))
}

fn node_meta(p: &impl Properties, key: &[&str]) -> Option<String> {
    let mut path = vec!["metadata"];
    path.extend_from_slice(key);
    node(p, &path)
}

/// Which mesh's proxy this is, by what only kuma-dp puts in the node.
pub fn mesh(p: &impl Properties) -> MeshKind {
    if kuma::NODE_MARKERS.iter().any(|k| node_meta(p, k).is_some()) {
        MeshKind::Kuma
    } else {
        MeshKind::Istio
    }
}

/// What the local side's sources read from.
struct Node<'a, P> {
    p: &'a P,
    id: Option<String>,
    tags: Option<&'a Tags>,
}

impl<P: Properties> Lookup for Node<'_, P> {
    fn lookup(&self, source: Source) -> Option<String> {
        match source {
            Source::Meta(key) => node_meta(self.p, key),
            Source::NodeId(part) => kuma::id_part(self.id.as_deref()?, part).map(str::to_owned),
            Source::NodeCluster => node(self.p, &["cluster"]),
            Source::Tag(t) => self.tags?.get(t).map(str::to_owned),
            _ => None,
        }
    }
}

pub fn local(p: &impl Properties) -> Local {
    local_with(p, None)
}

/// The local identity, completed with an inbound listener's Kuma tags when there are some.
pub fn local_with(p: &impl Properties, tags: Option<&Tags>) -> Local {
    let mesh = mesh(p);
    let id = (mesh == MeshKind::Kuma).then(|| node(p, &["id"])).flatten();
    let (workload, mesh_id) = sources::resolve(mesh, Side::Local, &Node { p, id, tags });
    Local {
        workload,
        mesh_id,
        mesh,
    }
}

/// What the peer's sources read from.
struct PeerOf<'a, P> {
    p: &'a P,
    /// Istio: the filter-state key holding the peer's metadata.
    key: Option<&'a str>,
    /// Istio, outbound: the endpoint's `istio.workload` metadata.
    endpoint: Option<String>,
    tags: Option<Tags>,
    cluster: Option<&'a str>,
}

impl<P: Properties> Lookup for PeerOf<'_, P> {
    fn lookup(&self, source: Source) -> Option<String> {
        let owned = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        match source {
            Source::Peer(f) => self.p.string(&["filter_state", self.key?, f]),
            Source::Endpoint(i) => self
                .endpoint
                .as_deref()?
                .split(';')
                .nth(usize::from(i))
                .and_then(owned),
            Source::Tag(t) => self.tags.as_ref()?.get(t).map(str::to_owned),
            Source::ClusterService => self.cluster.map(kuma::cluster_service).and_then(owned),
            Source::ClusterNamespace => self
                .cluster
                .map(kuma::cluster_service)
                .and_then(kuma::service_namespace)
                .and_then(owned),
            _ => None,
        }
    }
}

/// The peer: the caller on an inbound listener, the callee on an outbound one.
pub fn peer(p: &impl Properties, reporter: Reporter, mesh: MeshKind, hints: Hints<'_>) -> Workload {
    let mut from = PeerOf {
        p,
        key: None,
        endpoint: None,
        tags: None,
        cluster: None,
    };
    match (mesh, reporter) {
        (MeshKind::Kuma, Reporter::Destination) => {
            from.tags = match hints.tags_header {
                Some(h) => Some(Tags::from_header(h)),
                None => p.string(&kuma::TAGS_HEADER).map(|h| Tags::from_header(&h)),
            };
        }
        (MeshKind::Kuma, Reporter::Source) => from.cluster = hints.cluster,
        (MeshKind::Istio, _) => {
            let key = match reporter {
                Reporter::Destination => "downstream_peer",
                Reporter::Source => "upstream_peer",
            };
            // Newest proxies expose `<key>_obj` with field support; 2024-2025 ones a Struct at
            // `<key>`. Probe with the workload field so a missing peer costs two reads.
            let obj = match reporter {
                Reporter::Destination => "downstream_peer_obj",
                Reporter::Source => "upstream_peer_obj",
            };
            from.key = [obj, key]
                .into_iter()
                .find(|k| p.string(&["filter_state", k, "workload"]).is_some());
            if from.key.is_none() && reporter == Reporter::Source {
                // The client side knows the endpoint it picked, even when the peer sent no
                // metadata: "workload;namespace;canonical-service;canonical-revision;cluster".
                from.endpoint = p.string(&[
                    "xds",
                    "upstream_host_metadata",
                    "filter_metadata",
                    "istio",
                    "workload",
                ]);
            }
        }
    }
    sources::resolve(mesh, Side::Peer, &from).0
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
        let fields = [
            "workload",
            "namespace",
            "app",
            "version",
            "service",
            "revision",
            "cluster",
        ];
        for (f, v) in fields.iter().zip([
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
        let w = peer(&m, Reporter::Destination, MeshKind::Istio, Hints::default());
        assert_eq!(
            (
                w.workload.as_str(),
                w.namespace.as_str(),
                w.cluster.as_str()
            ),
            ("productpage-v1", "bookinfo", "K")
        );
        assert_eq!(
            peer(&m, Reporter::Source, MeshKind::Istio, Hints::default()).workload,
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
            peer(&m, Reporter::Source, MeshKind::Istio, Hints::default()).workload,
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
        let w = peer(&m, Reporter::Source, MeshKind::Istio, Hints::default());
        assert_eq!(
            (
                w.workload.as_str(),
                w.canonical_service.as_str(),
                w.app.as_str()
            ),
            ("details-v1", "details", "unknown")
        );

        let w = peer(
            &Map::default(),
            Reporter::Destination,
            MeshKind::Istio,
            Hints::default(),
        );
        assert_eq!(w.workload, "unknown");
        assert_eq!(w.canonical_revision, "latest");
    }

    fn kuma_node(m: &mut Map) {
        m.set(
            &["xds", "node", "id"],
            "default.podinfo-7d9f8b6c5-k2x4q.test",
        )
        .set(&["xds", "node", "cluster"], "podinfo-canary_test_svc_9898")
        .set(
            &["xds", "node", "metadata", "dataplane.proxyType"],
            "dataplane",
        );
    }

    #[test]
    fn kuma_local_identity_from_the_node_then_the_inbound_tags() {
        let mut m = Map::default();
        kuma_node(&mut m);
        let l = local(&m);
        assert_eq!(l.mesh, MeshKind::Kuma);
        assert_eq!(l.mesh_id, "default");
        let w = &l.workload;
        assert_eq!(
            [
                &w.workload,
                &w.namespace,
                &w.canonical_service,
                &w.cluster,
                &w.canonical_revision
            ]
            .map(String::as_str),
            [
                "podinfo-7d9f8b6c5-k2x4q",
                "test",
                "podinfo-canary_test_svc_9898",
                "unknown",
                "latest"
            ]
        );
        let tags = Tags::from_header(
            "&kuma.io/zone=zone-1&&version=v2&&app=podinfo&&kuma.io/service=other&",
        );
        let w = local_with(&m, Some(&tags)).workload;
        assert_eq!(
            [
                &w.cluster,
                &w.version,
                &w.canonical_revision,
                &w.app,
                &w.canonical_service
            ]
            .map(String::as_str),
            [
                "zone-1",
                "v2",
                "v2",
                "podinfo",
                "podinfo-canary_test_svc_9898"
            ],
            "the node's cluster wins over a listener's service"
        );
        // Found at the pre-1.33 top-level path too, and by kuma-dp's version entry alone.
        let mut m = Map::default();
        m.set(&["node", "id"], "m.p.n").set(
            &["node", "metadata", "version", "kumaDp", "version"],
            "2.9.0",
        );
        let l = local(&m);
        assert_eq!(
            (l.mesh, l.mesh_id.as_str(), l.workload.namespace.as_str()),
            (MeshKind::Kuma, "m", "n")
        );
        // An Istio node with a node id of the same shape is still Istio's.
        let mut m = Map::default();
        node(&mut m, &["xds"]);
        m.set(&["xds", "node", "id"], "default.podinfo.test");
        assert_eq!(local(&m).mesh, MeshKind::Istio);
        assert_eq!(local(&m).workload.workload, "reviews-v2");
    }

    #[test]
    fn kuma_peers_from_the_callers_tags_or_the_destination_cluster() {
        let header = "&kuma.io/service=web_ns_svc_80&&kuma.io/zone=z2&&k8s.kuma.io/namespace=ns&";
        let hints = Hints {
            cluster: Some("localhost:9898"),
            tags_header: Some(header),
        };
        let w = peer(
            &Map::default(),
            Reporter::Destination,
            MeshKind::Kuma,
            hints,
        );
        assert_eq!(
            [&w.canonical_service, &w.cluster, &w.namespace, &w.workload].map(String::as_str),
            ["web_ns_svc_80", "z2", "ns", "unknown"],
            "inbound: the caller's tags, not the local cluster"
        );
        // Without a kept header, the request header property (where the proxy still has it).
        let mut m = Map::default();
        m.set(&kuma::TAGS_HEADER, header);
        assert_eq!(
            peer(&m, Reporter::Destination, MeshKind::Kuma, Hints::default()).cluster,
            "z2"
        );
        let hints = Hints {
            cluster: Some("backend_shop_svc_8080-0123456789abcdef"),
            tags_header: Some(header),
        };
        let w = peer(&m, Reporter::Source, MeshKind::Kuma, hints);
        assert_eq!(
            [&w.canonical_service, &w.namespace, &w.cluster].map(String::as_str),
            ["backend_shop_svc_8080", "shop", "unknown"],
            "outbound: the destination cluster, never the header"
        );
        let w = peer(&m, Reporter::Source, MeshKind::Kuma, Hints::default());
        assert_eq!(w.canonical_service, "unknown");
    }

    #[test]
    fn cluster_service_reads_istio_services_metadata() {
        let mut m = Map::default();
        let inner = crate::metadata::encode_pairs(&[
            (b"host", b"r.b.svc.cluster.local"),
            (b"name", b"r"),
            (b"namespace", b"b"),
        ]);
        m.set(
            &[
                "xds",
                "cluster_metadata",
                "filter_metadata",
                "istio",
                "services",
            ],
            crate::metadata::encode_pairs(&[(&inner, b"")]),
        );
        let s = cluster_service(&m).unwrap();
        assert_eq!(
            (s.host.as_str(), s.name.as_str(), s.namespace.as_str()),
            ("r.b.svc.cluster.local", "r", "b")
        );
        assert_eq!(cluster_service(&Map::default()), None);
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
            mesh: MeshKind::Istio,
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
