//! Decodes a batch, checking every count, reference and byte against the input.

use crate::event::{
    Batch, Header, Key, MeshKind, Protocol, Record, Reporter, Service, TraceId, Workload,
};
use crate::varint::Reader;
use crate::{DecodeError, MAGIC, VERSION};

/// Smallest encodings, used to bound counts (and so allocations) by the remaining input.
const MIN_STRING: usize = 1;
const MIN_KEY: usize = 17;
const MIN_RECORD: usize = 5;

/// Decodes one batch. Never panics; every allocation is bounded by `buf.len()`.
pub fn decode(buf: &[u8]) -> Result<Batch, DecodeError> {
    let mut r = Reader::new(buf);
    if r.bytes(MAGIC.len(), "magic")
        .map_err(|_| DecodeError::BadMagic)?
        != MAGIC
    {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u8("version")?;
    if version != VERSION && version != 1 {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let vm_id = r.varint("vm_id")?;
    let sequence = r.varint("sequence")?;
    let dropped = r.varint("dropped")?;
    let base = r.varint("base_start_us")?;
    let mut local = [0u64; 7];
    for f in &mut local {
        *f = r.varint("local identity")?;
    }
    let mesh_id = r.varint("mesh_id")?;
    let mesh = if version == 1 {
        MeshKind::Istio
    } else {
        let b = r.u8("mesh")?;
        MeshKind::from_byte(b).ok_or(DecodeError::UnknownMesh(b))?
    };

    let strings = strings(&mut r)?;
    let refs = Refs { len: strings.len() };
    let s = |what, v: u64| -> Result<String, DecodeError> {
        refs.check(what, v)
            .map(|i| strings.get(i as usize).cloned().unwrap_or_default())
    };
    let [workload, namespace, app, version, canonical_service, canonical_revision, cluster] = local;
    let header = Header {
        vm_id,
        sequence,
        dropped,
        local: Workload {
            workload: s("local workload", workload)?,
            namespace: s("local namespace", namespace)?,
            app: s("local app", app)?,
            version: s("local version", version)?,
            canonical_service: s("local canonical service", canonical_service)?,
            canonical_revision: s("local canonical revision", canonical_revision)?,
            cluster: s("local cluster", cluster)?,
        },
        mesh_id: s("mesh_id", mesh_id)?,
        mesh,
    };

    let n = r.count("key", MIN_KEY)?;
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        keys.push(key(&mut r, &refs, i)?);
    }

    let n = r.count("record", MIN_RECORD)?;
    let mut records = Vec::with_capacity(n);
    let mut prev = base;
    for i in 0..n {
        let rec = record(&mut r, &refs, keys.len(), i, prev)?;
        prev = rec.start_unix_us;
        records.push(rec);
    }
    if r.remaining() > 0 {
        return Err(DecodeError::TrailingBytes(r.remaining()));
    }
    Ok(Batch {
        header,
        strings,
        keys,
        records,
    })
}

fn strings(r: &mut Reader<'_>) -> Result<Vec<String>, DecodeError> {
    let n = r.count("string", MIN_STRING)?;
    let mut out = Vec::with_capacity(n);
    for index in 0..n {
        let len = r.varint("string length")?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated("string"))?;
        let bytes = r.bytes(len, "string")?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::BadUtf8 { index })?;
        out.push(s.to_owned());
    }
    Ok(out)
}

struct Refs {
    len: usize,
}

impl Refs {
    fn check(&self, what: &'static str, index: u64) -> Result<u32, DecodeError> {
        if index < self.len as u64 {
            Ok(index as u32)
        } else {
            Err(DecodeError::BadStringRef {
                what,
                index,
                len: self.len,
            })
        }
    }

    fn read(&self, r: &mut Reader<'_>, what: &'static str) -> Result<u32, DecodeError> {
        let v = r.varint(what)?;
        self.check(what, v)
    }
}

fn key(r: &mut Reader<'_>, refs: &Refs, index: usize) -> Result<Key, DecodeError> {
    let bits = r.u8("key bits")?;
    if bits & !0b1011 != 0 || (bits >> 1) & 0b11 > 1 {
        return Err(DecodeError::BadKeyBits { key: index, bits });
    }
    let code = r.varint("response code")?;
    let response_code = u16::try_from(code).map_err(|_| DecodeError::OutOfRange {
        what: "response code",
        value: code,
    })?;
    let grpc_status = if bits & (1 << 3) != 0 {
        let g = r.varint("grpc status")?;
        Some(u32::try_from(g).map_err(|_| DecodeError::OutOfRange {
            what: "grpc status",
            value: g,
        })?)
    } else {
        None
    };
    Ok(Key {
        reporter: if bits & 1 != 0 {
            Reporter::Destination
        } else {
            Reporter::Source
        },
        protocol: if bits & (1 << 1) != 0 {
            Protocol::Grpc
        } else {
            Protocol::Http
        },
        response_code,
        grpc_status,
        method: refs.read(r, "method")?,
        response_flags: refs.read(r, "response flags")?,
        peer: Workload {
            workload: refs.read(r, "peer workload")?,
            namespace: refs.read(r, "peer namespace")?,
            app: refs.read(r, "peer app")?,
            version: refs.read(r, "peer version")?,
            canonical_service: refs.read(r, "peer canonical service")?,
            canonical_revision: refs.read(r, "peer canonical revision")?,
            cluster: refs.read(r, "peer cluster")?,
        },
        local_principal: refs.read(r, "local principal")?,
        peer_principal: refs.read(r, "peer principal")?,
        service: Service {
            host: refs.read(r, "service host")?,
            name: refs.read(r, "service name")?,
            namespace: refs.read(r, "service namespace")?,
        },
        upstream_cluster: refs.read(r, "upstream cluster")?,
    })
}

fn record(
    r: &mut Reader<'_>,
    refs: &Refs,
    keys: usize,
    index: usize,
    prev_start: u64,
) -> Result<Record, DecodeError> {
    let head = r.varint("record head")?;
    let key = head >> 2;
    if key >= keys as u64 {
        return Err(DecodeError::BadKeyRef {
            record: index,
            index: key,
            len: keys,
        });
    }
    let start_unix_us = prev_start.wrapping_add(r.zigzag("start delta")? as u64);
    let duration_us = r.varint("duration")?;
    let request_bytes = r.varint("request bytes")?;
    let response_bytes = r.varint("response bytes")?;
    let trace_id = if head & 0b10 != 0 {
        Some(match r.u8("trace id kind")? {
            1 => TraceId::Hex64(array(r)?),
            2 => TraceId::Hex128(array(r)?),
            3 => TraceId::Other(refs.read(r, "trace id")?),
            kind => {
                return Err(DecodeError::BadTraceKind {
                    record: index,
                    kind,
                })
            }
        })
    } else {
        None
    };
    let path = if head & 0b01 != 0 {
        Some(refs.read(r, "path")?)
    } else {
        None
    };
    Ok(Record {
        key: key as u32,
        start_unix_us,
        duration_us,
        request_bytes,
        response_bytes,
        trace_id,
        path,
    })
}

fn array<const N: usize>(r: &mut Reader<'_>) -> Result<[u8; N], DecodeError> {
    let mut out = [0u8; N];
    out.copy_from_slice(r.bytes(N, "trace id")?);
    Ok(out)
}
