//! Central health checking for the control plane: each endpoint probed once per interval by
//! `sluice serve`, whatever the number of proxies, and its health handed to every proxy as EDS
//! health status (a fleet of N proxies and M endpoints costs M probes per interval, not
//! N x M).
//!
//! - [`spec`]: what to probe, in the shape of Istio's WorkloadGroup `probe` (Kubernetes'
//!   readiness probe): `httpGet`, `tcpSocket` or `grpc`, with period, timeout and thresholds
//!   (the input stage's `input::probe`, which reads and checks it with the WorkloadGroup).
//! - [`tracker`]: the per-endpoint state machine (thresholds, when it last changed).
//! - [`run`]: the probes themselves (HTTP/1.1 GET, TCP connect, gRPC health v1) and the
//!   scheduler that spreads them over the interval.

pub mod run;
pub mod tracker;

pub use crate::input::probe as spec;

use serde::{Deserialize, Serialize};

/// One endpoint's health, as its owner reports it to the other replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The EDS `health_status` name: `HEALTHY`, `UNHEALTHY` or `UNKNOWN`.
    pub health: String,
    /// The replica that probes it.
    pub by: String,
    /// Probes its owner ran.
    pub probes: u64,
    /// When its health last changed, in milliseconds since the Unix epoch (0: never).
    pub changed_unix_ms: u64,
    /// Why its last probe failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
