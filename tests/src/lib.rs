//! Test support for waggle: a proxy-wasm ABI 0.2.1 host on wasmtime that runs the real filter
//! `.wasm`, Istio-shaped request fixtures, an HTTP capture server, an Envoy launcher, Prometheus
//! beside waggle, and a Honeycomb API emulator.

pub mod canary;
pub mod capture;
pub mod envoy;
pub mod honeycomb;
pub mod host;
pub mod istio;
pub mod prom;
pub mod vm;

pub use host::{CallAnswer, HttpCall, LogLine};
pub use vm::Vm;

use std::path::PathBuf;

/// The filter built by `cargo build --release --target wasm32-wasip1 -p waggle-filter`.
///
/// `WAGGLE_FILTER_WASM` overrides the path; otherwise it is found in the target directory this
/// test binary was built into (which honours `CARGO_TARGET_DIR`).
pub fn filter_wasm() -> PathBuf {
    if let Some(p) = std::env::var_os("WAGGLE_FILTER_WASM") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/debug/deps/<test binary>
    let target = exe.ancestors().nth(3).expect("target directory");
    let wasm = target.join("wasm32-wasip1/release/waggle_filter.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run `cargo build --release --target wasm32-wasip1 -p waggle-filter` first (scripts/test does)",
        wasm.display()
    );
    wasm
}
