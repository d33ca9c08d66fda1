//! Test harness for sluice: a real Envoy process, the filters' wasm modules, in-process Rust
//! upstreams and synchronous HTTP clients.
//!
//! A behaviour of sluice counts only when a test shows it through a real Envoy, so this crate
//! makes such a test short:
//!
//! ```no_run
//! use sluice_integration::{bootstrap::Bootstrap, client, envoy::Envoy, upstream::Upstream};
//!
//! let v1 = Upstream::start("v1");
//! let config = Bootstrap::new()
//!     .cluster("reviews", v1.port())
//!     .route_to_cluster("reviews")
//!     .render();
//! let envoy = Envoy::start(&config).unwrap();
//! let response = client::get(envoy.listener_port("listener_test"), "example.com", "/", client::NO_HEADERS).unwrap();
//! assert_eq!(response.served_by(), Some("v1"));
//! ```
//!
//! - [`envoy`]: provisions Envoy 1.40 ([`envoy::binary`]) and runs it ([`envoy::Envoy`]): port 0
//!   everywhere, real ports read back from the admin API, the log printed when a test fails.
//! - [`wasm`]: where the filters' `.wasm` modules are ([`wasm::module`]).
//! - [`bootstrap`]: hand-written Envoy bootstraps for tests of one filter or a chain.
//! - [`upstream`]: HTTP/1.1 + h2c servers that say who served and can fail, hang, reset or delay.
//! - [`client`]: synchronous HTTP/1.1, h2c and gRPC clients, single or many in parallel.
//! - [`mesh`]: Istio YAML -> the builder -> a running Envoy, for builder-driven tests.
//! - [`tls`]: self-signed certificates, `credentialName` secrets, `openssl s_server` HTTPS
//!   servers, `curl` HTTPS requests with a chosen SNI.
//! - [`serve`]: `sluice serve` in-process on a mesh folder, and Envoys that join it over ADS.
//! - [`binomial`]: bounds for statistical assertions that never flake (p < 1e-6).
//!
//! Everything is safe to use from tests running in parallel threads of one process, and from
//! several test processes at once.

pub mod binomial;
pub mod bootstrap;
pub mod cli;
pub mod client;
pub mod demo;
pub mod envoy;
pub mod etcd;
pub mod mesh;
mod runtime;
pub mod serve;
pub mod tls;
pub mod upstream;
pub mod wasm;

use std::path::PathBuf;

/// The root of the sluice repository (the workspace), where `.tools/` and `target/` live.
pub fn repo_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is integration/; its parent is the workspace root. Resolved at compile
    // time, so it holds wherever the test binary runs from.
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}
