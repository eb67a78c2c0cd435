//! The event and batch types, owned (as the filter builds them) and decoded (as tables).

use std::fmt::Write as _;

/// Which side of the request the reporting sidecar sits on, as Istio's `reporter` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Reporter {
    /// An outbound (client-side) listener.
    #[default]
    Source,
    /// An inbound (server-side) listener.
    Destination,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// Which mesh's sidecar sent a batch: which identity sources the filter read, and so which
/// metric families its events feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MeshKind {
    #[default]
    Istio,
    /// Kuma or Kong Mesh: identity from the node id, node cluster and `io.kuma.tags`.
    Kuma,
}

impl MeshKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MeshKind::Istio => "istio",
            MeshKind::Kuma => "kuma",
        }
    }

    /// The wire's byte for this mesh.
    pub fn byte(self) -> u8 {
        self as u8
    }

    pub fn from_byte(b: u8) -> Option<MeshKind> {
        [MeshKind::Istio, MeshKind::Kuma]
            .into_iter()
            .find(|m| m.byte() == b)
    }
}

/// The request protocol, as Istio's `request_protocol` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Http,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// A workload's identity: the local one from node metadata, or a peer's from metadata exchange.
///
/// Generic so the same shape holds owned strings (`S = String`) or string-table references
/// (`S = u32`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Workload<S = String> {
    pub workload: S,
    pub namespace: S,
    pub app: S,
    pub version: S,
    pub canonical_service: S,
    pub canonical_revision: S,
    pub cluster: S,
}

impl<S> Workload<S> {
    pub(crate) fn fields(&self) -> [&S; 7] {
        [
            &self.workload,
            &self.namespace,
            &self.app,
            &self.version,
            &self.canonical_service,
            &self.canonical_revision,
            &self.cluster,
        ]
    }

    pub fn map<T>(&self, mut f: impl FnMut(&S) -> T) -> Workload<T> {
        Workload {
            workload: f(&self.workload),
            namespace: f(&self.namespace),
            app: f(&self.app),
            version: f(&self.version),
            canonical_service: f(&self.canonical_service),
            canonical_revision: f(&self.canonical_revision),
            cluster: f(&self.cluster),
        }
    }
}

/// The destination service a request was routed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Service<S = String> {
    /// Fully qualified host, e.g. `reviews.default.svc.cluster.local`.
    pub host: S,
    pub name: S,
    pub namespace: S,
}

/// One finished request, as recorded by a sidecar in `on_log`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub reporter: Reporter,
    /// When the first byte of the request arrived, in microseconds since the Unix epoch.
    pub start_unix_us: u64,
    /// From the first request byte to the last response byte, in microseconds.
    pub duration_us: u64,
    /// The HTTP status; 0 when the request ended without one (Istio does the same).
    pub response_code: u16,
    pub grpc_status: Option<u32>,
    /// Envoy's short response-flag codes joined by `,`, or `-` when none.
    pub response_flags: String,
    pub protocol: Protocol,
    pub method: String,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// The other side: the source workload for an inbound request, the destination for outbound.
    pub peer: Workload,
    pub local_principal: String,
    pub peer_principal: String,
    pub service: Service,
    /// The upstream cluster of an outbound request; empty for inbound.
    pub upstream_cluster: String,
    pub trace_id: Option<String>,
    pub path: Option<String>,
}

/// An [`Event`] whose strings are borrowed: what the filter builds per request, so recording
/// copies nothing that a cache or the proxy's answer already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef<'a> {
    pub reporter: Reporter,
    pub start_unix_us: u64,
    pub duration_us: u64,
    pub response_code: u16,
    pub grpc_status: Option<u32>,
    pub response_flags: &'a str,
    pub protocol: Protocol,
    pub method: &'a str,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub peer: Workload<&'a str>,
    pub local_principal: &'a str,
    pub peer_principal: &'a str,
    pub service: Service<&'a str>,
    pub upstream_cluster: &'a str,
    /// Hex, either case (the encoder stores it as bytes); anything else is kept as a string.
    pub trace_id: Option<&'a str>,
    pub path: Option<&'a str>,
}

impl Event {
    /// This event, borrowed.
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            reporter: self.reporter,
            start_unix_us: self.start_unix_us,
            duration_us: self.duration_us,
            response_code: self.response_code,
            grpc_status: self.grpc_status,
            response_flags: &self.response_flags,
            protocol: self.protocol,
            method: &self.method,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            peer: self.peer.as_ref(),
            local_principal: &self.local_principal,
            peer_principal: &self.peer_principal,
            service: self.service.as_ref(),
            upstream_cluster: &self.upstream_cluster,
            trace_id: self.trace_id.as_deref(),
            path: self.path.as_deref(),
        }
    }
}

impl Workload {
    pub fn as_ref(&self) -> Workload<&str> {
        Workload {
            workload: &self.workload,
            namespace: &self.namespace,
            app: &self.app,
            version: &self.version,
            canonical_service: &self.canonical_service,
            canonical_revision: &self.canonical_revision,
            cluster: &self.cluster,
        }
    }
}

impl Service {
    pub fn as_ref(&self) -> Service<&str> {
        Service {
            host: &self.host,
            name: &self.name,
            namespace: &self.namespace,
        }
    }
}

/// What a batch says once about all of its events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// Identifies the sending VM (one per Envoy worker thread).
    pub vm_id: u64,
    /// Counts up from 0 per VM; a retried batch keeps its number.
    pub sequence: u64,
    /// Events the sender discarded since the previous batch (buffer full, batch refused).
    pub dropped: u64,
    /// The reporting sidecar's own workload.
    pub local: Workload,
    pub mesh_id: String,
    /// Version 1 batches (which predate it) are Istio's.
    pub mesh: MeshKind,
}

/// A distinct request shape within a batch: every field that is not per-request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Key {
    pub reporter: Reporter,
    pub protocol: Protocol,
    pub response_code: u16,
    pub grpc_status: Option<u32>,
    pub method: u32,
    pub response_flags: u32,
    pub peer: Workload<u32>,
    pub local_principal: u32,
    pub peer_principal: u32,
    pub service: Service<u32>,
    pub upstream_cluster: u32,
}

/// A trace id as carried on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceId {
    Hex64([u8; 8]),
    Hex128([u8; 16]),
    /// A string-table reference, for ids that are not plain lowercase hex.
    Other(u32),
}

/// The per-request part of an event; `key` indexes [`Batch::keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: u32,
    pub start_unix_us: u64,
    pub duration_us: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub trace_id: Option<TraceId>,
    pub path: Option<u32>,
}

/// A decoded batch, kept as tables so a consumer can do per-key work once per batch.
///
/// Every reference in a decoded batch is valid: [`crate::decode`] checks them all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub header: Header,
    pub strings: Vec<String>,
    pub keys: Vec<Key>,
    pub records: Vec<Record>,
}

impl Batch {
    /// The string behind a reference (empty for an invalid one, which decode never yields).
    pub fn str(&self, r: u32) -> &str {
        self.strings.get(r as usize).map_or("", String::as_str)
    }

    pub fn workload(&self, w: &Workload<u32>) -> Workload {
        w.map(|r| self.str(*r).to_owned())
    }

    pub fn trace_id(&self, t: &TraceId) -> String {
        match t {
            TraceId::Hex64(b) => hex(b),
            TraceId::Hex128(b) => hex(b),
            TraceId::Other(r) => self.str(*r).to_owned(),
        }
    }

    /// Rebuilds the owned event of one record.
    pub fn event(&self, rec: &Record) -> Event {
        let key = self.keys.get(rec.key as usize).cloned().unwrap_or_default();
        Event {
            reporter: key.reporter,
            start_unix_us: rec.start_unix_us,
            duration_us: rec.duration_us,
            response_code: key.response_code,
            grpc_status: key.grpc_status,
            response_flags: self.str(key.response_flags).to_owned(),
            protocol: key.protocol,
            method: self.str(key.method).to_owned(),
            request_bytes: rec.request_bytes,
            response_bytes: rec.response_bytes,
            peer: self.workload(&key.peer),
            local_principal: self.str(key.local_principal).to_owned(),
            peer_principal: self.str(key.peer_principal).to_owned(),
            service: Service {
                host: self.str(key.service.host).to_owned(),
                name: self.str(key.service.name).to_owned(),
                namespace: self.str(key.service.namespace).to_owned(),
            },
            upstream_cluster: self.str(key.upstream_cluster).to_owned(),
            trace_id: rec.trace_id.as_ref().map(|t| self.trace_id(t)),
            path: rec.path.map(|p| self.str(p).to_owned()),
        }
    }

    pub fn events(&self) -> impl Iterator<Item = Event> + '_ {
        self.records.iter().map(|r| self.event(r))
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
