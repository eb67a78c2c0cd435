//! Builds a batch one event at a time, interning repeated strings and request shapes.

use std::collections::HashMap;

use crate::event::{Event, EventRef, Header, Key, Protocol, Record, Reporter, Service, TraceId};
use crate::varint::{put, put_str, put_zigzag};
use crate::{MAGIC, VERSION};

/// Collects events and encodes them as one batch.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    strings: Vec<String>,
    string_index: HashMap<String, u32>,
    keys: Vec<Key>,
    key_index: HashMap<Key, u32>,
    records: Vec<Record>,
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Sets room aside for `records` events, so pushing that many allocates no record storage.
    pub fn reserve(&mut self, records: usize) {
        self.records
            .reserve(records.saturating_sub(self.records.len()));
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.string_index.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(s.to_owned());
        self.string_index.insert(s.to_owned(), i);
        i
    }

    pub fn push(&mut self, e: &Event) {
        self.push_ref(&e.as_ref());
    }

    /// Adds one event. Allocates only for strings and request shapes new to this batch, and
    /// when the record table outgrows what [`BatchBuilder::reserve`] set aside.
    pub fn push_ref(&mut self, e: &EventRef<'_>) {
        let key = Key {
            reporter: e.reporter,
            protocol: e.protocol,
            response_code: e.response_code,
            grpc_status: e.grpc_status,
            method: self.intern(e.method),
            response_flags: self.intern(e.response_flags),
            peer: e.peer.map(|s| self.intern(s)),
            local_principal: self.intern(e.local_principal),
            peer_principal: self.intern(e.peer_principal),
            service: Service {
                host: self.intern(e.service.host),
                name: self.intern(e.service.name),
                namespace: self.intern(e.service.namespace),
            },
            upstream_cluster: self.intern(e.upstream_cluster),
        };
        let key = match self.key_index.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.keys.len() as u32;
                self.keys.push(key.clone());
                self.key_index.insert(key, i);
                i
            }
        };
        let trace_id = e.trace_id.map(|t| self.trace_id(t));
        let path = e.path.map(|p| self.intern(p));
        self.records.push(Record {
            key,
            start_unix_us: e.start_unix_us,
            duration_us: e.duration_us,
            request_bytes: e.request_bytes,
            response_bytes: e.response_bytes,
            trace_id,
            path,
        });
    }

    fn trace_id(&mut self, t: &str) -> TraceId {
        let mut b16 = [0u8; 16];
        match t.len() {
            16 if unhex(t, &mut b16[..8]) => {
                let mut b8 = [0u8; 8];
                b8.copy_from_slice(&b16[..8]);
                TraceId::Hex64(b8)
            }
            32 if unhex(t, &mut b16) => TraceId::Hex128(b16),
            _ => TraceId::Other(self.intern(t)),
        }
    }

    /// Encodes everything pushed so far under `header`, leaving the builder empty for reuse.
    pub fn finish(&mut self, header: &Header) -> Vec<u8> {
        let local = header.local.map(|s| self.intern(s));
        let mesh_id = self.intern(&header.mesh_id);
        let base = self.records.first().map_or(0, |r| r.start_unix_us);

        let mut out = Vec::with_capacity(
            64 + self.strings.iter().map(|s| s.len() + 2).sum::<usize>() + self.records.len() * 12,
        );
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        put(&mut out, header.vm_id);
        put(&mut out, header.sequence);
        put(&mut out, header.dropped);
        put(&mut out, base);
        for f in local.fields() {
            put(&mut out, u64::from(*f));
        }
        put(&mut out, u64::from(mesh_id));
        out.push(header.mesh.byte());

        put(&mut out, self.strings.len() as u64);
        for s in &self.strings {
            put_str(&mut out, s);
        }
        put(&mut out, self.keys.len() as u64);
        for k in &self.keys {
            put_key(&mut out, k);
        }
        put(&mut out, self.records.len() as u64);
        let mut prev = base;
        for r in &self.records {
            put_record(&mut out, r, prev);
            prev = r.start_unix_us;
        }
        self.clear();
        out
    }

    pub fn clear(&mut self) {
        self.strings.clear();
        self.string_index.clear();
        self.keys.clear();
        self.key_index.clear();
        self.records.clear();
    }
}

fn put_key(out: &mut Vec<u8>, k: &Key) {
    let mut bits = 0u8;
    if k.reporter == Reporter::Destination {
        bits |= 1;
    }
    if k.protocol == Protocol::Grpc {
        bits |= 1 << 1;
    }
    if k.grpc_status.is_some() {
        bits |= 1 << 3;
    }
    out.push(bits);
    put(out, u64::from(k.response_code));
    if let Some(g) = k.grpc_status {
        put(out, u64::from(g));
    }
    put(out, u64::from(k.method));
    put(out, u64::from(k.response_flags));
    for f in k.peer.fields() {
        put(out, u64::from(*f));
    }
    for r in [
        k.local_principal,
        k.peer_principal,
        k.service.host,
        k.service.name,
        k.service.namespace,
        k.upstream_cluster,
    ] {
        put(out, u64::from(r));
    }
}

fn put_record(out: &mut Vec<u8>, r: &Record, prev_start: u64) {
    let head = (u64::from(r.key) << 2)
        | (u64::from(r.trace_id.is_some()) << 1)
        | u64::from(r.path.is_some());
    put(out, head);
    put_zigzag(out, r.start_unix_us.wrapping_sub(prev_start) as i64);
    put(out, r.duration_us);
    put(out, r.request_bytes);
    put(out, r.response_bytes);
    match r.trace_id {
        Some(TraceId::Hex64(b)) => {
            out.push(1);
            out.extend_from_slice(&b);
        }
        Some(TraceId::Hex128(b)) => {
            out.push(2);
            out.extend_from_slice(&b);
        }
        Some(TraceId::Other(s)) => {
            out.push(3);
            put(out, u64::from(s));
        }
        None => {}
    }
    if let Some(p) = r.path {
        put(out, u64::from(p));
    }
}

/// Decodes lowercase hex into `out`; false (leaving `out` partly written) for anything else.
fn unhex(s: &str, out: &mut [u8]) -> bool {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    if s.len() != out.len() * 2 {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        match pair {
            [h, l] => match (digit(*h), digit(*l)) {
                (Some(h), Some(l)) => *o = (h << 4) | l,
                _ => return false,
            },
            _ => return false,
        }
    }
    true
}
