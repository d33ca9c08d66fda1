//! The wire contract of sluice: every name that the filters, the builder that configures them,
//! the integration tests and the benchmarks must spell the same way. One home, so that a
//! rename is one edit and a mismatch is a compile error rather than a silent miss:
//!
//! - the modules ([`MODULES`], [`FILTERS`]) and the names derived from them (the cargo
//!   package and Envoy filter `sluice-<name>`, the root id `sluice_<name>`, the file
//!   `sluice_<name>.wasm`);
//! - the internal request headers and the response headers the filters answer with;
//! - the proxy-wasm shared-data keys and `vm_id`;
//! - the metric names the filters define, and the labels the bootstrap's `stats_tags`
//!   extract from them.
//!
//! Decisions travel as request headers because Envoy's route reads the final cluster with
//! `route: {cluster_header: ...}`. They are internal: the first sluice filter in the chain
//! (router -> canary -> fault -> breaker -> envoy.filters.http.router) removes every
//! client-sent copy (see [`INTERNAL_HEADERS`]), and the generated Envoy routes remove them
//! again with `request_headers_to_remove`, so they never reach an upstream.

// ---------------------------------------------------------------------------------------------
// Modules
// ---------------------------------------------------------------------------------------------

/// The router filter: matches the request, names the cluster or the split.
pub const ROUTER: &str = "router";
/// The canary filter: resolves a split to one member cluster.
pub const CANARY: &str = "canary";
/// The fault filter: injects the rule's delays and aborts.
pub const FAULT: &str = "fault";
/// The breaker filter: per-cluster circuit breaking.
pub const BREAKER: &str = "breaker";
/// The suite module: the four filters in one (`sluice_core::suite`).
pub const SUITE: &str = "suite";

/// The filters of the chain layout, by short name, in their order in the HTTP filter chain.
pub const FILTERS: [&str; 4] = [ROUTER, CANARY, FAULT, BREAKER];

/// Every wasm module sluice ships: the four [`FILTERS`], plus the [`SUITE`] that replaces
/// them in one filter.
pub const MODULES: [&str; 5] = [ROUTER, CANARY, FAULT, BREAKER, SUITE];

/// Prefix of a module's cargo package, of its Envoy HTTP filter name and of its log lines:
/// `sluice-<name>` ([`filter_name`]).
pub const FILTER_NAME_PREFIX: &str = "sluice-";

/// Prefix of a module's root id (and Istio `pluginName`) and of its file stem:
/// `sluice_<name>` ([`root_id`], [`module_file`]).
pub const ROOT_ID_PREFIX: &str = "sluice_";

/// Extension of a module file.
pub const MODULE_EXTENSION: &str = ".wasm";

/// [`filter_name`] of [`ROUTER`], as a constant: the modules' log prefixes must be `&'static`.
pub const ROUTER_FILTER: &str = "sluice-router";
/// [`filter_name`] of [`CANARY`].
pub const CANARY_FILTER: &str = "sluice-canary";
/// [`filter_name`] of [`FAULT`].
pub const FAULT_FILTER: &str = "sluice-fault";
/// [`filter_name`] of [`BREAKER`].
pub const BREAKER_FILTER: &str = "sluice-breaker";
/// [`filter_name`] of [`SUITE`].
pub const SUITE_FILTER: &str = "sluice-suite";

/// `sluice-<name>`: the cargo package of module `name`, its Envoy HTTP filter name, and the
/// prefix of its log lines.
pub fn filter_name(name: &str) -> String {
    format!("{FILTER_NAME_PREFIX}{name}")
}

/// `sluice_<name>`: the root id (and Istio `pluginName`) of module `name`.
pub fn root_id(name: &str) -> String {
    format!("{ROOT_ID_PREFIX}{name}")
}

/// `sluice_<name>.wasm`: the file of module `name` (as cargo builds it, and as the
/// generated configs and the OCI images name it).
pub fn module_file(name: &str) -> String {
    format!("{ROOT_ID_PREFIX}{name}{MODULE_EXTENSION}")
}

// ---------------------------------------------------------------------------------------------
// Headers and shared data
// ---------------------------------------------------------------------------------------------

/// The cluster Envoy's route forwards to (`route.cluster_header`). Set by the router for a
/// single destination, or by the canary filter once it resolved a split.
pub const CLUSTER_HEADER: &str = "x-sluice-cluster";
/// The split the canary filter must resolve (set by the router for weighted routes).
pub const SPLIT_HEADER: &str = "x-sluice-split";
/// The name of the rule the router matched; the fault filter keys its faults on it.
pub const RULE_HEADER: &str = "x-sluice-rule";

/// Every internal header. The router strips all of them on entry; a filter running alone strips
/// the ones it would otherwise trust.
pub const INTERNAL_HEADERS: [&str; 3] = [CLUSTER_HEADER, SPLIT_HEADER, RULE_HEADER];

/// Prefix of the proxy-wasm shared-data keys holding breaker state, one key per cluster:
/// `sluice.breaker.<cluster>`. Shared data is scoped by `vm_id`, so every sluice filter in one
/// Envoy uses the same `vm_id` ([`VM_ID`]).
pub const BREAKER_KEY_PREFIX: &str = "sluice.breaker.";

/// The `vm_id` every generated config gives the sluice filters, so they share one shared-data map.
pub const VM_ID: &str = "sluice";

/// Name of the response header naming the breaker that rejected a request.
pub const BREAKER_REJECT_HEADER: &str = "x-sluice-breaker";

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------
//
// proxy-wasm metrics have no labels: variable parts (rule, split, member, cluster) are
// dotted segments, sanitised by `crate::metrics::sanitize`, that the bootstrap's `stats_tags`
// turn into labels ([`METRIC_TAGS`], [`stats_tag_regex`]). The functions building whole names
// stay beside the filter that defines them (`crate::metrics`, `crate::canary`,
// `crate::fault::stats`, `crate::breaker`); the fixed parts are here.

/// Prefix every sluice metric name has.
pub const METRIC_PREFIX: &str = "sluice.";

/// Prefix Envoy puts before a wasm module's metric names in its stats (admin `/stats`,
/// Prometheus `wasmcustom_...`).
pub const ENVOY_METRIC_PREFIX: &str = "wasmcustom.";

/// Counter of requests the router answered 404 because no virtual host or rule matched.
pub const ROUTER_NO_MATCH: &str = "sluice.router.no_match";
/// Prefix of the per-rule router counters (`sluice.router.rule.<rule>.matched`).
pub const ROUTER_RULE_PREFIX: &str = "sluice.router.rule.";
/// Suffix of the per-rule router counters.
pub const ROUTER_RULE_SUFFIX: &str = ".matched";

/// Prefix of the per-split canary metrics: `sluice.canary.split.<split>.<...>`.
pub const CANARY_SPLIT_PREFIX: &str = "sluice.canary.split.";
/// Between split and member of the per-member counter
/// (`sluice.canary.split.<split>.member.<cluster>.routed`).
pub const CANARY_MEMBER_INFIX: &str = ".member.";
/// Suffix of the per-member counter of requests a split sent to a member.
pub const CANARY_ROUTED_SUFFIX: &str = ".routed";
/// Suffix of the gauge of a scheduled split's current step.
pub const CANARY_STEP_SUFFIX: &str = ".step";
/// Suffix of the counter of requests answered 503 for lack of an available member.
pub const CANARY_UNAVAILABLE_SUFFIX: &str = ".unavailable";
/// Suffix of the counter of a guarded split's halts: `sluice.canary.split.<split>.guard_halts`.
pub const CANARY_GUARD_HALTS_SUFFIX: &str = ".guard_halts";
/// Suffix of the gauge of a guarded split's state (0 healthy, 1 halted):
/// `sluice.canary.split.<split>.guard_halted`.
pub const CANARY_GUARD_HALTED_SUFFIX: &str = ".guard_halted";

/// Prefix of the per-rule fault counters: `sluice.fault.rule.<rule>.<what>`.
pub const FAULT_RULE_PREFIX: &str = "sluice.fault.rule.";
/// Suffix of a rule's counter of delays injected.
pub const FAULT_DELAYS_INJECTED_SUFFIX: &str = ".delays_injected";
/// Suffix of a rule's counter of aborts injected.
pub const FAULT_ABORTS_INJECTED_SUFFIX: &str = ".aborts_injected";
/// Counter of delays injected by trusted clients' `x-envoy-fault-delay-request` headers.
pub const FAULT_HEADER_DELAYS_INJECTED: &str = "sluice.fault.header.delays_injected";
/// Counter of aborts injected by trusted clients' `x-envoy-fault-abort-*` headers.
pub const FAULT_HEADER_ABORTS_INJECTED: &str = "sluice.fault.header.aborts_injected";
/// Counter of faults skipped because the worker already ran `maxActiveFaults` faults.
pub const FAULT_FAULTS_OVERFLOW: &str = "sluice.fault.faults_overflow";
/// Gauge of faults in progress, summed over workers.
pub const FAULT_ACTIVE_FAULTS: &str = "sluice.fault.active_faults";

/// Prefix of the per-cluster breaker metrics: `sluice.breaker.cluster.<cluster>.<what>`.
pub const BREAKER_CLUSTER_PREFIX: &str = "sluice.breaker.cluster.";
/// The `<what>` of each per-cluster breaker metric: counters of admissions, trips, trips a
/// `maxEjectionPercent` cap skipped, and rejections (open, overflow); gauges of the phase
/// ([`crate::breaker::Phase`] as a number) and of the requests in flight.
pub mod breaker_metric {
    /// Counter of requests the breaker admitted.
    pub const REQUESTS: &str = "requests";
    /// Counter of closed/half-open -> open transitions.
    pub const TRIPS: &str = "trips";
    /// Counter of trips skipped because the host's `maxEjectionPercent` was reached.
    pub const TRIP_SKIPPED_CAP: &str = "trip_skipped_cap";
    /// Counter of requests rejected because the breaker was open.
    pub const REJECTED_OPEN: &str = "rejected_open";
    /// Counter of requests rejected by `maxConcurrentRequests`.
    pub const REJECTED_OVERFLOW: &str = "rejected_overflow";
    /// Gauge of the phase (0 closed, 1 open, 2 half-open).
    pub const STATE: &str = "state";
    /// Gauge of the requests holding an in-flight slot.
    pub const IN_FLIGHT: &str = "in_flight";
}

/// Suffix of each filter's counter of regex matches the per-request step budget cut short:
/// `sluice.<module>.regex_budget_exceeded`.
pub const REGEX_BUDGET_EXCEEDED_SUFFIX: &str = ".regex_budget_exceeded";

/// Labels that the bootstrap's `stats_tags` extract from the metric names, e.g.
/// `wasmcustom.sluice.router.rule.<rule>.matched` gets `rule="<rule>"`.
pub const METRIC_TAGS: [&str; 4] = ["rule", "split", "member", "cluster"];

/// The `stats_tags` regex of label `tag` (one of [`METRIC_TAGS`]): Envoy removes the first
/// capture group from the tag-extracted name and uses the second as the value. Names are
/// sanitised to `[A-Za-z0-9_-]`, so no value contains a dot.
pub fn stats_tag_regex(tag: &str) -> String {
    format!(r"^wasmcustom\.sluice\.(?:[A-Za-z0-9_-]+\.)+?({tag}\.([A-Za-z0-9_-]+)\.)")
}

/// Prefix of the shared-data key of a canary split's schedule record:
/// `sluice.canary.<split>.start`.
pub const SCHEDULE_KEY_PREFIX: &str = "sluice.canary.";
/// Suffix of the shared-data key of a canary split's schedule record.
pub const SCHEDULE_KEY_SUFFIX: &str = ".start";
/// Suffix of the shared-data key of a guarded split's window: `sluice.canary.<split>.guard`.
pub const GUARD_KEY_SUFFIX: &str = ".guard";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_derive_as_the_configs_and_crates_spell_them() {
        assert_eq!(filter_name(ROUTER), "sluice-router");
        assert_eq!(root_id(SUITE), "sluice_suite");
        assert_eq!(module_file(BREAKER), "sluice_breaker.wasm");
        assert_eq!(&MODULES[..4], &FILTERS);
        let constants = [
            ROUTER_FILTER,
            CANARY_FILTER,
            FAULT_FILTER,
            BREAKER_FILTER,
            SUITE_FILTER,
        ];
        assert_eq!(constants.map(str::to_owned), MODULES.map(filter_name));
    }

    #[test]
    fn metric_names_share_one_prefix_and_envoy_shows_them_under_wasmcustom() {
        for name in [
            ROUTER_NO_MATCH,
            ROUTER_RULE_PREFIX,
            CANARY_SPLIT_PREFIX,
            FAULT_RULE_PREFIX,
            FAULT_HEADER_DELAYS_INJECTED,
            FAULT_HEADER_ABORTS_INJECTED,
            FAULT_FAULTS_OVERFLOW,
            FAULT_ACTIVE_FAULTS,
            BREAKER_CLUSTER_PREFIX,
        ] {
            assert!(name.starts_with(METRIC_PREFIX), "{name}");
        }
        assert_eq!(
            stats_tag_regex("rule"),
            r"^wasmcustom\.sluice\.(?:[A-Za-z0-9_-]+\.)+?(rule\.([A-Za-z0-9_-]+)\.)"
        );
        assert!(
            stats_tag_regex("rule")
                .starts_with(&format!("^{}", ENVOY_METRIC_PREFIX.replace('.', r"\.")))
        );
    }
}
