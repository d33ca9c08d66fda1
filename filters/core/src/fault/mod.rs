//! Fault injection with Istio `HTTPFaultInjection` semantics: the plugin config
//! ([`config`]), its validation into a [`FaultPlan`], per-request decisions, and the pieces the
//! cdylib needs to carry them out (delay queue, abort replies, trusted-client checks).
//!
//! - [`config`]: the serde types the builder emits and the filter parses.
//! - [`percent`]: Istio percentages as parts per million, and the draw.
//! - [`grpc`]: gRPC status names and Envoy's HTTP <-> gRPC status mappings.
//! - [`net`]: CIDRs and Envoy's `source.address` property.
//! - [`delay_queue`]: pending delays ordered by deadline, driving one root-context timer.
//! - [`plan`]: the compiled config and the per-request decision.
//! - [`stats`]: metric names.

pub mod config;
pub mod delay_queue;
pub mod grpc;
pub mod net;
pub mod percent;
pub mod plan;
pub mod stats;

pub use config::{Abort, Delay, FaultConfig, FaultRule, HeaderFaults, Percent};
pub use delay_queue::{DelayQueue, TimerChange};
pub use plan::{
    AbortCode, Decision, FaultPlan, Injection, Origin, Reply, abort_reply, is_grpc_content_type,
};
