//! Envoy sidecars shaped as Kuma dataplanes (`shared/reference/kuma.md` §3-§4): Kuma's node id,
//! node cluster and metadata, `inbound:<ip>:<port>` listeners carrying `io.kuma.tags`, the local
//! app cluster `localhost:<port>` with its `localhost_<port>` stat name, outbound listeners and
//! clusters named after the destination's `kuma.io/service`, and the `x-kuma-tags` header
//! outbound routes add and inbound routes remove. No Istio key anywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use crate::envoy::{router, static_cluster};

/// The ingest cluster as a Kuma sidecar names the backend's Service (`waggle` in
/// `waggle-system`, port 9091).
pub const INGEST_CLUSTER: &str = "waggle_waggle-system_svc_9091";

/// The `kuma.io/service` tag of a Kubernetes Service port: `<name>_<namespace>_svc_<port>`.
pub fn service_tag(name: &str, namespace: &str, port: u16) -> String {
    format!("{name}_{namespace}_svc_{port}")
}

/// A destination this dataplane calls: an outbound listener on `listen_port` whose cluster is
/// named after `service` and leads to `upstream_port` (the destination's inbound listener).
#[derive(Debug, Clone)]
pub struct Outbound {
    pub service: String,
    pub listen_port: u16,
    pub upstream_port: u16,
}

#[derive(Debug, Clone)]
pub struct Dataplane {
    pub mesh: String,
    pub pod: String,
    pub namespace: String,
    /// The inbound's `kuma.io/service` (also the node cluster: the dataplane has one inbound).
    pub service: String,
    pub zone: String,
    pub app: String,
    pub version: String,
    /// The inbound listener's port.
    pub listen_port: u16,
    pub app_port: u16,
    pub admin_port: u16,
    pub ingest_port: u16,
    pub outbound: Vec<Outbound>,
    pub wasm: PathBuf,
    /// Merged into the shipped filter configuration, as JSON.
    pub plugin_config: String,
}

/// The shipped `kuma/meshproxypatch.yaml`.
pub const PATCH: &str = include_str!("../../kuma/meshproxypatch.yaml");

/// The HTTP filter the MeshProxyPatch `patch` adds, as Kuma hands it to Envoy (protojson, which
/// Envoy's bootstrap reads too), loading `wasm` with `overrides` merged into its configuration.
pub fn patch_filter(patch: &str, wasm: &Path, overrides: &str) -> Result<Value> {
    let policy: serde_yaml::Value = serde_yaml::from_str(patch)?;
    let value = policy["spec"]["default"]["appendModifications"][0]["httpFilter"]["value"]
        .as_str()
        .context("the patch has no httpFilter value")?;
    let mut filter: Value = serde_yaml::from_str(value)?;
    let config = &mut filter["typedConfig"]["config"];
    config["vmConfig"]["code"]["local"]["filename"] = json!(wasm);
    let shipped = config["configuration"]["value"]
        .as_str()
        .context("no configuration value")?;
    let mut merged: Value = serde_json::from_str(shipped)?;
    let extra: Value = serde_json::from_str(overrides)?;
    for (k, v) in extra.as_object().into_iter().flatten() {
        merged[k] = v.clone();
    }
    config["configuration"]["value"] = json!(merged.to_string());
    Ok(filter)
}

impl Dataplane {
    /// The inbound's tags, as the zone control plane stamps them.
    pub fn tags(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("kuma.io/service", self.service.clone()),
            ("kuma.io/zone", self.zone.clone()),
            ("kuma.io/protocol", "http".to_owned()),
            ("k8s.kuma.io/namespace", self.namespace.clone()),
            (
                "k8s.kuma.io/service-name",
                self.service
                    .split('_')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            (
                "k8s.kuma.io/service-port",
                self.service
                    .rsplit('_')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            ("app", self.app.clone()),
            ("version", self.version.clone()),
        ])
    }

    /// `x-kuma-tags` as an outbound route writes it: `&name=value&` per tag, sorted.
    pub fn tags_header(&self) -> String {
        self.tags()
            .iter()
            .map(|(k, v)| format!("&{k}={v}&"))
            .collect()
    }

    /// The dataplane's own cluster for its app, as Kuma names it.
    pub fn local_cluster(&self) -> String {
        format!("localhost:{}", self.app_port)
    }

    fn hcm(&self, stat_prefix: &str, route_config: Value) -> Value {
        json!({
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": stat_prefix,
                "route_config": route_config,
                "http_filters": [
                    patch_filter(PATCH, &self.wasm, &self.plugin_config).expect("kuma/meshproxypatch.yaml holds a filter"),
                    router()
                ]
            }
        })
    }

    pub fn bootstrap(&self) -> Value {
        let local = self.local_cluster();
        let stat = local.replace(':', "_");
        let tags: serde_json::Map<String, Value> = self
            .tags()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
        let mut listeners = vec![json!({
            "name": format!("inbound:127.0.0.1:{}", self.listen_port),
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.listen_port}},
            "traffic_direction": "INBOUND",
            "metadata": {"filter_metadata": {"io.kuma.tags": tags}},
            "filter_chains": [{"filters": [self.hcm(&stat, json!({
                "name": format!("inbound:{}", self.service),
                "request_headers_to_remove": ["x-kuma-tags"],
                "virtual_hosts": [{
                    "name": self.service, "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": local, "timeout": "10s"}}]
                }]
            }))]}]
        })];
        let mut local_cluster = static_cluster(&local, self.app_port, json!({}));
        local_cluster["alt_stat_name"] = json!(stat);
        let mut clusters = vec![
            local_cluster,
            static_cluster(INGEST_CLUSTER, self.ingest_port, json!({})),
        ];
        for o in &self.outbound {
            listeners.push(json!({
                "name": format!("outbound:127.0.0.1:{}", o.listen_port),
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": o.listen_port}},
                "traffic_direction": "OUTBOUND",
                "filter_chains": [{"filters": [self.hcm(&o.service, json!({
                    "name": format!("outbound:{}", o.service),
                    "request_headers_to_add": [{"header": {"key": "x-kuma-tags", "value": self.tags_header()}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
                    "virtual_hosts": [{
                        "name": o.service, "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": o.service, "timeout": "10s"}}]
                    }]
                }))]}]
            }));
            clusters.push(static_cluster(&o.service, o.upstream_port, json!({})));
        }
        json!({
            "node": {
                "id": format!("{}.{}.{}", self.mesh, self.pod, self.namespace),
                "cluster": self.service,
                "metadata": {
                    "dataplane.proxyType": "dataplane",
                    "dataplane.admin.port": self.admin_port.to_string(),
                    "version": {
                        "kumaDp": {"version": "2.14.0", "gitTag": "2.14.0", "gitCommit": "unknown", "buildDate": "unknown"},
                        "envoy": {"version": "1.40.0", "build": "unknown", "kumaDpCompatible": true}
                    },
                    "features": ["feature-delta-grpc", "feature-bind-outbounds"],
                    "workdir": "/var/run/kuma-dp"
                }
            },
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "static_resources": {"listeners": listeners, "clusters": clusters}
        })
    }
}

/// Sets a Kuma dataplane's node in a wasmtime VM: id, cluster and kuma-dp's metadata.
pub fn set_node(vm: &mut crate::Vm, dp: &Dataplane) {
    vm.set_property(
        &["xds", "node", "id"],
        format!("{}.{}.{}", dp.mesh, dp.pod, dp.namespace),
    );
    vm.set_property(&["xds", "node", "cluster"], dp.service.clone());
    vm.set_property(
        &["xds", "node", "metadata", "dataplane.proxyType"],
        "dataplane",
    );
}

/// A request on one of `dp`'s listeners, as the wasmtime host hands it to the filter: inbound
/// from a caller with `caller_tags` (its `x-kuma-tags`), on a listener carrying `dp`'s tags;
/// outbound to `cluster`.
pub fn request(
    dp: &Dataplane,
    inbound: bool,
    cluster: &str,
    caller_tags: Option<&str>,
) -> crate::istio::Request {
    let mut extra = Vec::new();
    if inbound {
        let tags: Vec<(String, String)> = dp
            .tags()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let pairs: Vec<(&[u8], &[u8])> = tags
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        let path = [
            "xds",
            "listener_metadata",
            "filter_metadata",
            "io.kuma.tags",
        ];
        extra.push((
            path.map(String::from).to_vec(),
            waggle_filter::metadata::encode_pairs(&pairs),
        ));
    }
    crate::istio::Request {
        inbound,
        peer_form: crate::istio::PeerForm::Missing,
        peer_principal: None,
        local_principal: None,
        service: None,
        host: format!("{}:9898", dp.app),
        cluster_name: Some(cluster.into()),
        headers: caller_tags
            .map(|t| ("x-kuma-tags".to_owned(), t.to_owned()))
            .into_iter()
            .collect(),
        extra,
        ..Default::default()
    }
}
