//! The state a proxy-wasm host keeps for one VM, all of it inside the wasmtime `Store` so
//! tests run in parallel without globals.

pub mod cel;
mod imports;
mod memory;
mod wasi;

use std::collections::{BTreeSet, HashMap, VecDeque};

pub(crate) use imports::link;

/// proxy-wasm status codes (ABI 0.2.1).
pub mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const INVALID_MEMORY_ACCESS: i32 = 6;
    pub const EMPTY: i32 = 7;
    pub const CAS_MISMATCH: i32 = 8;
    pub const UNIMPLEMENTED: i32 = 12;
}

/// Header map types (ABI 0.2.1).
pub mod map {
    pub const REQUEST_HEADERS: usize = 0;
    pub const RESPONSE_HEADERS: usize = 2;
    pub const HTTP_CALL_RESPONSE_HEADERS: usize = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: usize = 7;
    pub const COUNT: usize = 8;
}

/// Buffer types (ABI 0.2.1).
pub mod buffer {
    pub const HTTP_CALL_RESPONSE_BODY: i32 = 4;
    pub const VM_CONFIGURATION: i32 = 6;
    pub const PLUGIN_CONFIGURATION: i32 = 7;
}

/// One line the filter logged through `proxy_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: u32,
    pub message: String,
}

/// One `proxy_http_call` the filter made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    /// The context the call belongs to: its answer goes there.
    pub context_id: u32,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
    pub deadline_ns: u64,
}

impl HttpCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How the test answers an HTTP call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAnswer {
    Status(u16),
    /// The connection failed (Envoy reports no headers).
    Failure,
    /// The call timed out (Envoy reports no headers, as for a failure).
    Timeout,
}

pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Serialises a header map in proxy-wasm's pairs format.
pub fn encode_pairs(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let borrowed: Vec<(&[u8], &[u8])> = pairs
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    waggle_filter::metadata::encode_pairs(&borrowed)
}

/// Parses proxy-wasm's pairs format; `None` if malformed.
pub fn decode_pairs(bytes: &[u8]) -> Option<Pairs> {
    let pairs = waggle_filter::metadata::pairs(bytes)?;
    Some(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
    )
}

#[derive(Debug, Default)]
pub struct HostState {
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    /// The VM's WASI environment (WasmPlugin `vmConfig.env`).
    pub env: Vec<(String, String)>,
    /// Attributes for the whole VM (node metadata), keyed by the NUL-joined path.
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Attributes of the request being run; they shadow `properties`.
    pub request_properties: HashMap<Vec<u8>, Vec<u8>>,
    /// When set, every attribute read returns seeded random bytes (or nothing).
    pub random_properties: Option<u64>,
    /// Every attribute path the filter asked for.
    pub property_reads: BTreeSet<String>,
    pub header_maps: [Pairs; map::COUNT],
    pub call_response_body: Vec<u8>,
    pub now_ns: u64,
    pub tick_period_ms: u32,
    pub logs: Vec<LogLine>,
    pub stdio: Vec<u8>,
    pub pending_calls: Vec<HttpCall>,
    pub next_token: u32,
    /// Clusters the proxy knows; a call to another gets BAD_ARGUMENT, as in Envoy.
    pub clusters: Option<Vec<String>>,
    /// The context whose callback is running (or that `proxy_set_effective_context` chose).
    pub effective_context: u32,
    pub shared_data: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    pub queues: Vec<(Vec<u8>, VecDeque<Vec<u8>>)>,
    pub metrics: Vec<(i32, Vec<u8>, i64)>,
    pub local_responses: Vec<(u32, Vec<u8>)>,
    pub rng: u64,
    /// The proxy lacks Envoy's CEL foreign functions (older or stripped builds): `expr_*`
    /// answer NOT_FOUND, as `proxy_call_foreign_function` does for an unknown name.
    pub without_expressions: bool,
    /// Expressions `expr_create` compiled, by token - 1; `None` once deleted.
    pub expressions: Vec<Option<Vec<cel::Element>>>,
    /// Every call from the VM into the host (proxy-wasm and WASI), counted by a wasmtime call
    /// hook: what a host-call budget is measured against.
    pub host_calls: u64,
}

impl HostState {
    pub fn new(now_ns: u64) -> Self {
        Self {
            now_ns,
            next_token: 1,
            rng: 0x9e37_79b9_7f4a_7c15,
            ..Self::default()
        }
    }

    pub(crate) fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Whether `path` holds an attribute or anything below it (CEL's `has` and `in`).
    pub(crate) fn exists(&self, path: &[String]) -> bool {
        if self.random_properties.is_some() {
            return true;
        }
        let key = path.join("\0").into_bytes();
        let mut below = key.clone();
        below.push(0);
        self.request_properties
            .keys()
            .chain(self.properties.keys())
            .any(|k| *k == key || k.starts_with(&below))
    }

    pub(crate) fn property(&mut self, path: &[u8]) -> Option<Vec<u8>> {
        self.property_reads
            .insert(String::from_utf8_lossy(path).replace('\0', "."));
        if let Some(seed) = self.random_properties.as_mut() {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = *seed >> 11;
            return match r % 5 {
                0 => None,
                1 => Some((r as i64 % 1000).to_le_bytes().to_vec()),
                2 => Some(Vec::new()),
                _ => Some((0..(r % 300)).map(|i| (r >> (i % 40)) as u8).collect()),
            };
        }
        self.request_properties
            .get(path)
            .or_else(|| self.properties.get(path))
            .cloned()
    }
}
