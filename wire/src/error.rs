//! Why a byte string is not a valid batch.

/// Every way decoding can fail; the message names the part of the batch at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a waggle batch: the body does not start with the magic bytes \"WGL\"")]
    BadMagic,
    #[error("unsupported waggle batch version {0} (this build reads versions 1 to {v})", v = crate::VERSION)]
    UnsupportedVersion(u8),
    #[error("unknown mesh {0} in the batch header (0 is istio, 1 kuma)")]
    UnknownMesh(u8),
    #[error("batch truncated while reading {0}")]
    Truncated(&'static str),
    #[error("varint too long or overflowing while reading {0}")]
    BadVarint(&'static str),
    #[error("{what} count {count} is more than the remaining {remaining} bytes can hold")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        remaining: usize,
    },
    #[error("string {index} of the string table is not valid UTF-8")]
    BadUtf8 { index: usize },
    #[error("{what} refers to string {index}, but the table holds {len}")]
    BadStringRef {
        what: &'static str,
        index: u64,
        len: usize,
    },
    #[error("record {record} refers to key {index}, but the table holds {len}")]
    BadKeyRef {
        record: usize,
        index: u64,
        len: usize,
    },
    #[error("key {key} has unknown bits {bits:#04x}")]
    BadKeyBits { key: usize, bits: u8 },
    #[error("{what} value {value} is out of range")]
    OutOfRange { what: &'static str, value: u64 },
    #[error("record {record} has unknown trace id kind {kind}")]
    BadTraceKind { record: usize, kind: u8 },
    #[error("{0} trailing bytes after the last record")]
    TrailingBytes(usize),
}
