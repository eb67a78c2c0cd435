//! waggle's wire format: the batches of request events a sidecar filter sends to the backend.
//!
//! # Format, version 2
//!
//! All integers are unsigned LEB128 varints unless noted; "zigzag" marks a signed varint
//! (`(n << 1) ^ (n >> 63)`). A string is a varint byte length followed by UTF-8 bytes. A
//! string *reference* is a varint index into the batch's string table.
//!
//! ```text
//! batch    = magic:"WGL" version:u8(=1) header strings keys records
//! header   = vm_id sequence dropped base_start_us
//!            local:identity mesh_id:ref mesh:u8
//!   mesh   = 0 istio | 1 kuma; version 1 batches end the header at mesh_id and are istio's
//! identity = workload:ref namespace:ref app:ref version:ref
//!            canonical_service:ref canonical_revision:ref cluster:ref
//! strings  = count string*                  every distinct string of the batch, once
//! keys     = count key*                     every distinct request shape, once
//! key      = bits:u8 response_code [grpc_status]
//!            method:ref response_flags:ref peer:identity
//!            local_principal:ref peer_principal:ref
//!            service_host:ref service_name:ref service_namespace:ref upstream_cluster:ref
//!   bits   = reporter(bit 0: 1 = destination) | protocol(bits 1-2: 0 http, 1 grpc)
//!            | has_grpc_status(bit 3); the other bits must be zero
//! records  = count record*
//! record   = (key_index << 2 | has_trace << 1 | has_path)
//!            start_delta_us:zigzag duration_us request_bytes response_bytes
//!            [trace] [path:ref]
//!   start_delta_us is relative to the previous record's start (the first: base_start_us)
//!   trace  = 1 b:[u8; 8]    a 16-digit lowercase hex id (B3 64-bit)
//!          | 2 b:[u8; 16]   a 32-digit lowercase hex id (W3C, B3 128-bit)
//!          | 3 ref          any other id, as a string
//! ```
//!
//! A batch is self-contained: the string and key tables are per batch, so a batch that is
//! retried or lost never corrupts another. The pair (`vm_id`, `sequence`) identifies a batch;
//! `dropped` counts events the sender had to discard since the batch before it.
//!
//! The decoder is total: any byte string yields a [`Batch`] or a [`DecodeError`], and every
//! allocation is bounded by what the remaining input could encode.

#![forbid(unsafe_code)]

mod decode;
mod encode;
mod error;
mod event;
mod varint;

pub use decode::decode;
pub use encode::BatchBuilder;
pub use error::DecodeError;
pub use event::{
    Batch, Event, EventRef, Header, Key, MeshKind, Protocol, Record, Reporter, Service, TraceId,
    Workload,
};

/// The three bytes every batch starts with.
pub const MAGIC: [u8; 3] = *b"WGL";
/// The format version this crate writes; it reads this one and version 1.
pub const VERSION: u8 = 2;
/// Most records (and so request shapes) one batch may hold: the filter never sends more, and
/// the backend refuses batches that do.
pub const MAX_BATCH_RECORDS: usize = 10_000;
/// Most events a sender may report dropped in one batch; more is refused as absurd.
pub const MAX_DROPPED: u64 = 1 << 40;
/// Longest request duration a batch may carry (a year); longer is refused as absurd, so duration
/// sums of any realistic traffic stay exact.
pub const MAX_DURATION_US: u64 = 365 * 24 * 3600 * 1_000_000;
/// The MIME type of an encoded batch.
pub const CONTENT_TYPE: &str = "application/x-waggle-batch";

/// Realistic events for tests and benchmarks; unused code costs the filter nothing after LTO.
pub mod sample;
