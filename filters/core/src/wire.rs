//! The contract between the sluice filters chained in one Envoy HTTP filter chain
//! (router -> canary -> fault -> breaker -> envoy.filters.http.router).
//!
//! Decisions travel as request headers because Envoy's route reads the final cluster with
//! `route: {cluster_header: ...}`. They are internal: the first sluice filter in the chain
//! removes every client-sent copy (see [`INTERNAL_HEADERS`]), and the generated Envoy routes
//! remove them again with `request_headers_to_remove`, so they never reach an upstream.

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
