//! Metric names of the fault filter. Envoy shows them under `wasmcustom.`; the rule part is
//! sanitised ([`crate::metrics::sanitize`]) so it stays one stat segment, which the builder's
//! `stats_tags` extract as the `rule` label with `^wasmcustom\.sluice\.fault\.rule\.(([^.]+)\.)`.

use crate::metrics::sanitize;

/// Prefix of the per-rule counters: `sluice.fault.rule.<rule>.<what>`.
pub const RULE_PREFIX: &str = "sluice.fault.rule.";
/// Counter of delays injected by trusted clients' `x-envoy-fault-delay-request` headers.
pub const HEADER_DELAYS_INJECTED: &str = "sluice.fault.header.delays_injected";
/// Counter of aborts injected by trusted clients' `x-envoy-fault-abort-*` headers.
pub const HEADER_ABORTS_INJECTED: &str = "sluice.fault.header.aborts_injected";
/// Counter of faults skipped because the worker already ran `maxActiveFaults` faults.
pub const FAULTS_OVERFLOW: &str = "sluice.fault.faults_overflow";
/// Gauge of faults in progress (delayed or aborted streams not yet finished), summed over
/// workers: each worker adds and subtracts its own share.
pub const ACTIVE_FAULTS: &str = "sluice.fault.active_faults";

/// Counter of delays a rule injected: `sluice.fault.rule.<rule>.delays_injected`.
pub fn rule_delays_injected(rule: &str) -> String {
    format!("{RULE_PREFIX}{}.delays_injected", sanitize(rule))
}

/// Counter of aborts a rule injected (counted when the reply is sent, so an abort whose
/// client left during the preceding delay is not counted): `sluice.fault.rule.<rule>.aborts_injected`.
pub fn rule_aborts_injected(rule: &str) -> String {
    format!("{RULE_PREFIX}{}.aborts_injected", sanitize(rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_stay_one_segment() {
        assert_eq!(
            rule_delays_injected("reviews.default/jason"),
            "sluice.fault.rule.reviews_default_jason.delays_injected"
        );
        assert_eq!(
            rule_aborts_injected("r-1"),
            "sluice.fault.rule.r-1.aborts_injected"
        );
    }
}
