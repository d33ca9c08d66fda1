//! Packaging of the wasm modules: building and shrinking them ([`build`], [`toolchain`]), OCI
//! images ([`oci`]) and the JSON Schemas of their configs ([`schema`]).
//!
//! May import: [`crate::xds`] (the module names), [`crate::output`] and the leaves; the istio
//! target imports [`oci`] to pin the images it names.

pub mod build;
pub mod oci;
pub mod schema;
pub mod toolchain;
