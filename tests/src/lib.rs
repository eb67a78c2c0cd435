//! Test support for waggle: a proxy-wasm ABI 0.2.1 host on wasmtime that runs the real filter
//! `.wasm`, Istio-shaped request fixtures, an HTTP capture server, an Envoy launcher, Prometheus
//! beside waggle, and a Honeycomb API emulator.

pub mod bench;
pub mod canary;
pub mod capture;
pub mod client;
pub mod envoy;
pub mod fuzz;
pub mod honeycomb;
pub mod hooks;
pub mod host;
pub mod istio;
pub mod kuma;
pub mod process;
pub mod prom;
pub mod receiver;
pub mod victoria;
pub mod vm;

pub use host::{CallAnswer, HttpCall, LogLine};
pub use vm::Vm;

use std::path::PathBuf;

/// The filter built by `cargo build --release --target wasm32-wasip1 -p waggle-filter`, if it
/// exists: `WAGGLE_FILTER_WASM`, else found in the target directory the running program was
/// built into (which honours `CARGO_TARGET_DIR`): `<target>/debug/deps/<test>` for tests,
/// `<target>/release/<program>` for `waggle-demo` and `waggle-bench`.
pub fn built_filter_wasm() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WAGGLE_FILTER_WASM") {
        return Some(PathBuf::from(p));
    }
    built_wasm("waggle_filter.wasm")
}

/// `wasm32-wasip1/release/<name>` in the target directory this executable was built in.
pub fn built_wasm(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|t| t.join("wasm32-wasip1/release").join(name))
        .find(|p| p.is_file())
}

/// [`built_filter_wasm`], for tests: a missing filter is a setup error that says how to build it.
pub fn filter_wasm() -> PathBuf {
    built_filter_wasm().expect(
        "the filter .wasm is missing: run `cargo build --release --target wasm32-wasip1 -p waggle-filter` first (scripts/test does)",
    )
}

/// The `waggle` binary `scripts/test` builds beside the running test, for tests that run the
/// command itself (`waggle analyze`).
pub fn waggle_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .ancestors()
        .nth(2)
        .map(|d| d.join("waggle"))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "{} is not built (cargo build -p waggle --bin waggle)",
        bin.display()
    );
    bin
}
