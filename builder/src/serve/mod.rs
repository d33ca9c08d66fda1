//! `sluice serve`: a live xDS control plane over the builder's pipeline.
//!
//! The file tree `generate` reads is the store: serve reads it with the same stages and the
//! same diagnostics ([`crate::resources`]), turns the target-neutral [`crate::xds::ResourceSet`]
//! into a typed, versioned [`snapshot::Snapshot`], and serves it over gRPC ADS, state of the
//! world and delta, to every Envoy that joins with the bootstrap of `--target envoy-xds`
//! ([`bootstrap`]). It watches the tree: a valid change is pushed, an invalid one is refused
//! (diagnostics logged and on the admin port's `/status`) while the last good config keeps
//! serving.
//!
//! Stages: [`load`] (files -> snapshot) -> [`stream`] (the protocol state of one ADS stream, pure)
//! -> [`groups`] (one snapshot per proxy group, chosen by `node.cluster`) -> [`ads`] (the tonic service that drives one [`stream::Stream`] per proxy) and [`admin`]
//! (health, readiness, Prometheus metrics, per-proxy status). [`state`] holds what they share.
//! [`health`] runs the prober over the probed endpoints and publishes their health (EDS only);
//! `register` takes VM registrations over HTTP (with `--store` and a token).

pub mod admin;
pub mod ads;
#[cfg(feature = "etcd")]
pub mod fleet;
pub mod groups;
pub mod halts;
pub mod health;
pub mod load;
pub mod malloc;
#[cfg(feature = "etcd")]
pub mod register;
pub mod snapshot;
pub mod state;
pub mod status;
pub mod stream;
pub mod typed;
pub mod wire;

mod server;
pub use server::*;

/// The default ADS address.
pub use crate::input::options::DEFAULT_XDS_LISTEN;
/// The default admin address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:18080";
