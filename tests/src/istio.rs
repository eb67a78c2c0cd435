//! Istio-shaped attributes for driving the filter: node metadata and per-request properties
//! at the paths and encodings Envoy 1.40 uses (see shared/reference/istio-wasm.md).

use crate::vm::Vm;
use waggle_filter::metadata::encode_pairs;

/// Sets a sidecar's node metadata: `WORKLOAD_NAME`, `NAMESPACE`, `LABELS`, cluster and mesh.
/// `legacy` writes it at the pre-1.33 `node.metadata` path instead of `xds.node.metadata`.
pub fn set_node(
    vm: &mut Vm,
    workload: &str,
    namespace: &str,
    app: &str,
    version: &str,
    legacy: bool,
) {
    let set = |vm: &mut Vm, key: &[&str], v: &str| {
        let mut path: Vec<&str> = if legacy {
            vec!["node", "metadata"]
        } else {
            vec!["xds", "node", "metadata"]
        };
        path.extend_from_slice(key);
        vm.set_property(&path, v);
    };
    set(vm, &["WORKLOAD_NAME"], workload);
    set(vm, &["NAMESPACE"], namespace);
    set(vm, &["LABELS", "app"], app);
    set(vm, &["LABELS", "version"], version);
    set(vm, &["LABELS", "service.istio.io/canonical-name"], app);
    set(
        vm,
        &["LABELS", "service.istio.io/canonical-revision"],
        version,
    );
    set(vm, &["CLUSTER_ID"], "Kubernetes");
    set(vm, &["MESH_ID"], "cluster.local");
}

/// How the peer's metadata is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerForm {
    /// `filter_state.<key>_obj` (2026 proxies).
    Object,
    /// `filter_state.<key>` Struct (2024-2025 proxies).
    Struct,
    /// No metadata exchange happened.
    Missing,
}

/// One request's attributes.
#[derive(Debug, Clone)]
pub struct Request {
    pub inbound: bool,
    pub start_unix_ns: u64,
    pub duration_ns: u64,
    pub code: u16,
    pub flags: u64,
    pub method: String,
    pub request_size: u64,
    pub response_size: u64,
    pub peer: [String; 7],
    pub peer_form: PeerForm,
    pub peer_principal: Option<String>,
    pub local_principal: Option<String>,
    pub host: String,
    /// `istio.services[0]` of the cluster: (host, name, namespace).
    pub service: Option<(String, String, String)>,
    pub cluster_name: Option<String>,
    /// `connection.id`: Envoy's never-reused downstream connection counter.
    pub connection_id: Option<u64>,
    /// `upstream.address`: the endpoint an outbound request went to.
    pub upstream_address: Option<String>,
    pub headers: Vec<(String, String)>,
    pub path: String,
    /// More properties, as (path, raw value): e.g. a Kuma listener's metadata.
    pub extra: Vec<(Vec<String>, Vec<u8>)>,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            inbound: true,
            start_unix_ns: 1_767_225_600_000_000_000,
            duration_ns: 5_000_000,
            code: 200,
            flags: 0,
            method: "GET".into(),
            request_size: 300,
            response_size: 1200,
            peer: [
                "productpage-v1",
                "bookinfo",
                "productpage",
                "v1",
                "productpage",
                "v1",
                "Kubernetes",
            ]
            .map(String::from),
            peer_form: PeerForm::Struct,
            peer_principal: Some(
                "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage".into(),
            ),
            local_principal: Some("spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews".into()),
            host: "reviews:9080".into(),
            service: Some((
                "reviews.bookinfo.svc.cluster.local".into(),
                "reviews".into(),
                "bookinfo".into(),
            )),
            cluster_name: Some("inbound|9080||".into()),
            connection_id: None,
            upstream_address: None,
            headers: vec![],
            path: "/reviews/1?user=42".into(),
            extra: vec![],
        }
    }
}

const PEER_FIELDS: [&str; 7] = [
    "workload",
    "namespace",
    "app",
    "version",
    "service",
    "revision",
    "cluster",
];

impl Request {
    pub fn properties(&self) -> Vec<(Vec<String>, Vec<u8>)> {
        let mut out: Vec<(Vec<String>, Vec<u8>)> = Vec::new();
        let mut put =
            |path: &[&str], v: Vec<u8>| out.push((path.iter().map(|s| s.to_string()).collect(), v));
        let int = |v: u64| v.to_le_bytes().to_vec();
        put(
            &["xds", "listener_direction"],
            int(if self.inbound { 1 } else { 2 }),
        );
        put(&["request", "time"], int(self.start_unix_ns));
        put(&["request", "duration"], int(self.duration_ns));
        put(&["response", "code"], int(u64::from(self.code)));
        put(&["response", "flags"], int(self.flags));
        put(&["request", "method"], self.method.clone().into_bytes());
        put(&["request", "total_size"], int(self.request_size));
        put(&["response", "total_size"], int(self.response_size));
        put(&["request", "host"], self.host.clone().into_bytes());
        put(&["request", "path"], self.path.clone().into_bytes());
        let key = if self.inbound {
            "downstream_peer"
        } else {
            "upstream_peer"
        };
        let key = match self.peer_form {
            PeerForm::Object => Some(format!("{key}_obj")),
            PeerForm::Struct => Some(key.to_owned()),
            PeerForm::Missing => None,
        };
        if let Some(k) = key {
            for (f, v) in PEER_FIELDS.iter().zip(&self.peer) {
                put(&["filter_state", &k, f], v.clone().into_bytes());
            }
        }
        let (local_path, peer_path): (&[&str], &[&str]) = if self.inbound {
            (
                &["filter_state", "io.istio.local_principal"],
                &["filter_state", "io.istio.peer_principal"],
            )
        } else {
            (
                &["upstream", "uri_san_local_certificate"],
                &["upstream", "uri_san_peer_certificate"],
            )
        };
        if let Some(p) = &self.local_principal {
            put(local_path, p.clone().into_bytes());
        }
        if let Some(p) = &self.peer_principal {
            put(peer_path, p.clone().into_bytes());
        }
        if let Some((h, n, ns)) = &self.service {
            let inner = encode_pairs(&[
                (b"host", h.as_bytes()),
                (b"name", n.as_bytes()),
                (b"namespace", ns.as_bytes()),
            ]);
            put(
                &[
                    "xds",
                    "cluster_metadata",
                    "filter_metadata",
                    "istio",
                    "services",
                ],
                encode_pairs(&[(&inner, b"")]),
            );
        }
        if let Some(c) = &self.cluster_name {
            put(&["xds", "cluster_name"], c.clone().into_bytes());
        }
        if let Some(id) = self.connection_id {
            put(&["connection", "id"], int(id));
        }
        if let Some(a) = &self.upstream_address {
            put(&["upstream", "address"], a.clone().into_bytes());
        }
        for (k, v) in self.header_map() {
            put(&["request", "headers", k], v.as_bytes().to_vec());
        }
        out.extend(self.extra.iter().cloned());
        out
    }

    /// The request header map as Envoy holds it: the pseudo-headers first (HTTP/1's `Host`
    /// becomes `:authority`), then the regular headers.
    pub fn header_map(&self) -> Vec<(&str, &str)> {
        let mut map = vec![
            (":authority", self.host.as_str()),
            (":path", self.path.as_str()),
            (":method", self.method.as_str()),
            (":scheme", "http"),
        ];
        map.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        map
    }

    /// Runs this request through `vm`.
    pub fn run(&self, vm: &mut Vm) -> anyhow::Result<(i32, i32)> {
        vm.request(&self.properties(), &self.header_map())
    }
}
