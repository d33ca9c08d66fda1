//! Stage 5, target: the Envoy resources ([`crate::xds::ResourceSet`]) packaged for one way of
//! running them: [`envoy`] (a static bootstrap), [`istio`] (WasmPlugin/EnvoyFilter resources
//! plus VirtualServices), [`compose`] (a docker-compose project around the envoy target).
//! Adding a target is one more module and one more [`crate::Target`] arm.
//!
//! May import every stage below: [`crate::xds`], [`crate::package`], [`mod@crate::model`],
//! [`crate::check`], [`crate::input`], and the leaves.

pub mod compose;
pub mod envoy;
pub mod envoy_xds;
pub mod istio;
pub mod yaml_out;

/// The istio target's name before the stage layout (`sluice::emit::istio_target`), which the
/// CLI and the integration tests use.
pub use istio as istio_target;
