//! Where the filters' wasm modules are.
//!
//! Envoy loads `target/wasm32-wasip1/release/sluice_<name>.wasm` of the repository (always the
//! default target directory: a test run with its own `CARGO_TARGET_DIR` still finds the modules
//! `cargo xtask build-wasm` built), or `$SLUICE_WASM_DIR/sluice_<name>.wasm` when that is set.
//! A missing module is an error naming the command that builds it, never a silent skip.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use sluice_core::wire;

/// The filters that ship as wasm modules, in their order in the HTTP filter chain
/// ([`wire::FILTERS`], re-exported for the harness's users).
pub const FILTERS: [&str; 4] = wire::FILTERS;

/// Every wasm module: the four filters, plus `suite`, which does all four in one filter
/// (`filters/suite`, configured with `sluice_core::suite::SuiteConfig`); [`wire::MODULES`].
pub const MODULES: [&str; 5] = wire::MODULES;

/// Environment variable naming a directory holding `sluice_<name>.wasm` files.
pub const WASM_DIR_ENV: &str = "SLUICE_WASM_DIR";

/// The directory the modules are read from: `$SLUICE_WASM_DIR`, else the repository's
/// `target/wasm32-wasip1/release`.
pub fn module_dir() -> PathBuf {
    match std::env::var_os(WASM_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => crate::repo_root()
            .join("target")
            .join("wasm32-wasip1")
            .join("release"),
    }
}

/// The path of the module of filter `name` (`"router"`, `"canary"`, `"fault"`, `"breaker"` or `"suite"`).
///
/// Fails if the name is unknown or the module was not built, saying how to build it.
pub fn module(name: &str) -> Result<PathBuf> {
    module_in(&module_dir(), name)
}

/// Like [`module`], looking in `dir` (tests of the harness use it instead of changing the
/// process-wide environment under other tests' feet).
pub fn module_in(dir: &Path, name: &str) -> Result<PathBuf> {
    if !MODULES.contains(&name) {
        bail!(
            "unknown sluice filter {name:?}: expected one of {}",
            MODULES.join(", ")
        );
    }
    let path = dir.join(wire::module_file(name));
    if path.is_file() {
        return Ok(path);
    }
    bail!(
        "the wasm module of the sluice {name} filter is missing: {} does not exist.\n\
         Build the modules with `cargo xtask build-wasm` (or just this one with \
         `cargo build --release --target wasm32-wasip1 -p {}`) from the repository root{}.",
        path.display(),
        wire::filter_name(name),
        if std::env::var_os(WASM_DIR_ENV).is_some() {
            format!(", or fix ${WASM_DIR_ENV}")
        } else {
            String::new()
        }
    )
}
