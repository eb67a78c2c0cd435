//! waggle's proxy-wasm filter: records every request a sidecar sees and ships compact batches
//! to the waggle backend.
//!
//! Everything but `host` and `filter` is plain Rust, unit-tested natively; those two adapt the
//! proxy-wasm ABI and exist only in the `.wasm`.

pub mod attributes;
pub mod cache;
pub mod config;
pub mod flags;
pub mod identity;
pub mod kuma;
pub mod metadata;
pub mod outbox;
pub mod properties;
pub mod record;
pub mod recorder;
pub mod sources;

#[cfg(target_arch = "wasm32")]
mod filter;
#[cfg(target_arch = "wasm32")]
mod host;
