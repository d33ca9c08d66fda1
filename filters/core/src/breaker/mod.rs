//! The breaker: config types, the per-cluster state machine, its shared-data encoding, and the
//! outcome classification of Envoy responses.
//!
//! # Model
//!
//! One [`BreakerState`] per upstream cluster lives in proxy-wasm shared data under
//! [`shared_data_key`] (`sluice.breaker.<cluster>`, vm_id [`crate::wire::VM_ID`]), so every
//! worker thread and every sluice filter (the canary reads it) sees the same state. Shared data
//! offers only get and compare-and-set: every change goes through [`update`], a bounded
//! get -> compute -> set(cas) loop over a [`SharedStore`].
//!
//! ```text
//!            N consecutive errors, or error ratio >= threshold over `interval`
//!   Closed ----------------------------------------------------------------> Open
//!     ^                                                                       |
//!     | a probe succeeds                          ejection time elapsed       |
//!     |                                          (checked lazily on admit)    v
//!     +------------------------------- HalfOpen <----------------------------+
//!                                          |  a probe fails: Open again, longer ejection
//!                                          +--------------------------------------------> Open
//! ```
//!
//! Ejection time backs off as Envoy's outlier detection does: `base_ejection_time x trips`,
//! capped at `max_ejection_time`. The trip count decays by one for every `interval` the breaker
//! stays closed (Envoy decrements a host's ejection multiplier the same way), so a cluster that
//! recovered for good starts again from the base ejection time, while a flapping one keeps the
//! long ejections.
//!
//! While open, requests are rejected at once (503, `x-sluice-breaker: open`, or
//! `<cluster> open` with `detailed_replies`). Once the
//! ejection time is over, the next request moves the breaker to half-open and at most
//! `half_open_probes` requests go through at a time; the first probe that succeeds closes the
//! breaker, the first that fails reopens it. A probe whose outcome says nothing about the
//! upstream (the client went away) frees its slot for another probe. A probe still unfinished
//! after `probe_timeout` counts as failed: the next admission reopens the breaker and frees
//! every slot, so a client that holds a probe open (a slow upload) cannot hold the breaker
//! half-open. While every probe slot is taken (within its deadline) the canary treats the
//! cluster as unavailable, exactly as when open.
//!
//! Independently, `max_concurrent_requests` bounds the requests in flight to the cluster across
//! all workers (503, `x-sluice-breaker: <cluster> overflow`). Every admitted request that took
//! an in-flight slot gives it back exactly once, when the stream ends (`on_log`), whatever
//! happened to it (reset, timeout, local reply).
//!
//! # Layout
//!
//! Each module imports only those listed before it:
//!
//! - [`config`]: the plugin config, its validation, the compiled [`Policy`] per cluster;
//! - [`classify`]: what finished request counts as a failure ([`Verdict`]);
//! - [`state`]: the state machine ([`BreakerState::admit`], [`BreakerState::record`]);
//! - [`codec`]: the shared-data encoding of the state and its key;
//! - [`store`]: the shared store and the compare-and-set loop.

pub mod classify;
pub mod codec;
pub mod config;
pub mod state;
pub mod store;
#[cfg(test)]
mod test_support;

// The flat API callers have always used (`sluice_core::breaker::BreakerState`, ...).
pub use classify::{Verdict, classify, classify_with_code, observed, response_flags};
pub use codec::{
    ENCODED_LEN, ENCODING_VERSION, is_unavailable, is_unavailable_with_clock, shared_data_key,
};
pub use config::{
    Breaker, BreakerConfig, BreakerSettings, CompiledBreakers, ConfigError, ErrorRatio, Outcome,
    OutcomeSet, Policy, ejection_allowed, host_siblings, istio_port_host,
};
pub use state::{BreakerState, Decision, Phase, Rejection, Ticket, Transition};
pub use store::{
    MAX_CAS_ATTEMPTS, SharedStore, Snapshot, StoreError, UpdateError, ensure_exists, update,
    update_from,
};

/// The metric name `sluice.breaker.cluster.<cluster>.<what>`, the cluster name sanitised by
/// [`crate::metrics::sanitize`] so Envoy's stat name and the `stats_tags` regexes stay
/// unambiguous.
pub fn metric_name(cluster: &str, what: &str) -> String {
    format!(
        "{}{}.{what}",
        crate::wire::BREAKER_CLUSTER_PREFIX,
        crate::metrics::sanitize(cluster)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_sanitised() {
        assert_eq!(
            metric_name("outbound|80|v1|reviews.default.svc", "trips"),
            "sluice.breaker.cluster.outbound_80_v1_reviews_default_svc.trips"
        );
        assert_eq!(shared_data_key("a.b"), "sluice.breaker.a.b");
    }
}
