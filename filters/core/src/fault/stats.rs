//! Metric names of the fault filter. Envoy shows them under `wasmcustom.`; the rule part is
//! sanitised ([`crate::metrics::sanitize`]) so it stays one stat segment, which the builder's
//! `stats_tags` extract as the `rule` label with `^wasmcustom\.sluice\.fault\.rule\.(([^.]+)\.)`.

use crate::metrics::sanitize;
use crate::wire::{FAULT_ABORTS_INJECTED_SUFFIX, FAULT_DELAYS_INJECTED_SUFFIX};

/// Prefix of the per-rule counters: `sluice.fault.rule.<rule>.<what>`.
pub const RULE_PREFIX: &str = crate::wire::FAULT_RULE_PREFIX;
/// Counter of delays injected by trusted clients' `x-envoy-fault-delay-request` headers.
pub const HEADER_DELAYS_INJECTED: &str = crate::wire::FAULT_HEADER_DELAYS_INJECTED;
/// Counter of aborts injected by trusted clients' `x-envoy-fault-abort-*` headers.
pub const HEADER_ABORTS_INJECTED: &str = crate::wire::FAULT_HEADER_ABORTS_INJECTED;
/// Counter of faults skipped because the worker already ran `maxActiveFaults` faults.
pub const FAULTS_OVERFLOW: &str = crate::wire::FAULT_FAULTS_OVERFLOW;
/// Gauge of faults in progress (delayed or aborted streams not yet finished), summed over
/// workers: each worker adds and subtracts its own share.
pub const ACTIVE_FAULTS: &str = crate::wire::FAULT_ACTIVE_FAULTS;

/// Counter of delays a rule injected: `sluice.fault.rule.<rule>.delays_injected`.
pub fn rule_delays_injected(rule: &str) -> String {
    format!(
        "{RULE_PREFIX}{}{FAULT_DELAYS_INJECTED_SUFFIX}",
        sanitize(rule)
    )
}

/// Counter of aborts a rule injected (counted when the reply is sent, so an abort whose
/// client left during the preceding delay is not counted): `sluice.fault.rule.<rule>.aborts_injected`.
pub fn rule_aborts_injected(rule: &str) -> String {
    format!(
        "{RULE_PREFIX}{}{FAULT_ABORTS_INJECTED_SUFFIX}",
        sanitize(rule)
    )
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
