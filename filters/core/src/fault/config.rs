//! The fault filter's plugin configuration, as the builder emits it and the filter parses it.
//!
//! JSON, camelCase, unknown fields refused. The fault blocks mirror Istio's
//! `HTTPFaultInjection` field for field, so the builder copies a VirtualService's `fault`
//! verbatim. Example:
//!
//! ```json
//! {
//!   "afterRouter": true,
//!   "faults": [{
//!     "rule": "ratings-jason",
//!     "delay": {"fixedDelay": "7s", "percentage": {"value": 100}},
//!     "abort": {"httpStatus": 500, "percentage": {"value": 0.1}}
//!   }],
//!   "maxActiveFaults": 1000,
//!   "headerFaults": {"trustedCidrs": ["10.0.0.0/8"], "maxDelay": "10s"},
//!   "debugHeader": false
//! }
//! ```
//!
//! Percentages follow Istio's implementation, not its old docs: a fault whose `percentage` is
//! absent is injected on **no** request (Istio translates it to an Envoy `FractionalPercent`
//! of 0; istio/istio#36303 documented this). [`FaultConfig::warnings`] flags such faults.

use serde::{Deserialize, Serialize};

use crate::matching::HttpMatchRequest;

/// Default for [`FaultConfig::max_active_faults`] (Envoy's fault filter has no default cap;
/// 1000 per worker keeps a misconfigured 100% delay from parking unbounded streams).
pub const DEFAULT_MAX_ACTIVE_FAULTS: u32 = 1000;

/// Default for [`HeaderFaults::max_delay`].
pub const DEFAULT_HEADER_MAX_DELAY: &str = "10s";

/// The whole plugin configuration of one fault filter instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultConfig {
    /// `true`: the sluice router runs first and names the matched rule in `x-sluice-rule`;
    /// the filter trusts that header and ignores each fault's `match`. `false` (default, safe
    /// when running alone): client copies of `x-sluice-rule` are stripped and the first fault
    /// whose `match` accepts the request applies.
    #[serde(default)]
    pub after_router: bool,
    /// The faults, one per rule, evaluated in order (first match wins, as Istio's routes).
    #[serde(default)]
    pub faults: Vec<FaultRule>,
    /// Cap on faults in progress (delayed or aborted streams not yet finished) **per Envoy
    /// worker thread**; beyond it requests pass untouched and `sluice.fault.faults_overflow`
    /// counts them. The process-wide bound is this value times `--concurrency`.
    #[serde(default = "default_max_active_faults")]
    pub max_active_faults: u32,
    /// Request-header-controlled faults (`x-envoy-fault-delay-request`, ...), honoured only for
    /// clients inside the trusted CIDRs. Absent (default): fault headers are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_faults: Option<HeaderFaults>,
    /// `true`: responses of faulted requests carry `x-sluice-fault: delay=5000ms` or
    /// `abort=503` (both, comma separated, when both fired). Default `false`: faults stay
    /// invisible to clients, as Envoy's and Istio's are.
    #[serde(default)]
    pub debug_header: bool,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            after_router: false,
            faults: Vec::new(),
            max_active_faults: DEFAULT_MAX_ACTIVE_FAULTS,
            header_faults: None,
            debug_header: false,
        }
    }
}

/// Parses the plugin configuration JSON; the error says where and why (serde's line, column
/// and field).
pub fn parse(json: &[u8]) -> Result<FaultConfig, String> {
    crate::json::from_slice(json).map_err(|err| format!("invalid fault filter config: {err}"))
}

fn default_max_active_faults() -> u32 {
    DEFAULT_MAX_ACTIVE_FAULTS
}

/// The fault of one rule: Istio's `HTTPFaultInjection` plus the rule it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    /// The rule's name: the router's rule name (matched against `x-sluice-rule` when
    /// `afterRouter` is true) and the `<rule>` of the metrics `sluice.fault.rule.<rule>.*`.
    /// Unique within the config.
    pub rule: String,
    /// Istio `HTTPMatchRequest` blocks (ORed), evaluated when `afterRouter` is false. Empty:
    /// every request matches, as an Istio route without `match`.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    /// Delay requests before forwarding them (Istio `HTTPFaultInjection.Delay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    /// Answer requests with an error instead of forwarding them (Istio
    /// `HTTPFaultInjection.Abort`). Drawn independently of `delay`; when both fire the abort
    /// is sent after the delay, as Envoy's fault filter does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
}

/// Istio `HTTPFaultInjection.Delay` (fixed delays only, as Istio supports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delay {
    /// How long to hold the request, e.g. `"5s"` or `"100ms"`; at least 1ms, whole
    /// milliseconds (Istio's duration rules).
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    pub fixed_delay: String,
    /// Share of requests delayed. Absent: falls back to `percent`; both absent: no request
    /// is delayed (Istio's behaviour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
    /// Istio's deprecated integer percentage (0-100), used only when `percentage` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(max = 100)))]
    pub percent: Option<u32>,
}

/// Istio `HTTPFaultInjection.Abort`: exactly one of `httpStatus` / `grpcStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Abort {
    /// HTTP status to answer with, 200-599. A gRPC request gets it as the matching gRPC
    /// status (Envoy's HTTP-to-gRPC mapping, e.g. 503 -> UNAVAILABLE) in a trailers-only reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 200, max = 599)))]
    pub http_status: Option<u32>,
    /// gRPC status name to answer with (`"UNAVAILABLE"`, `"NOT_FOUND"`, ...: the names of
    /// grpc/doc/statuscodes.md). A non-gRPC request gets the matching HTTP status
    /// (e.g. UNAVAILABLE -> 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// Share of requests aborted. Absent: no request is aborted (Istio's behaviour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Istio `Percent`: a share of requests in percent, 0.0 or 0.0001 to 100.0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// The percentage, e.g. `0.1` for one request in a thousand. Honoured to 0.0001%.
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0, max = 100.0)))]
    pub value: f64,
}

/// Faults requested by trusted clients through Envoy's fault headers:
/// `x-envoy-fault-delay-request: <ms>`, `x-envoy-fault-delay-request-percentage: <0-100>`,
/// `x-envoy-fault-abort-request: <HTTP status>`, `x-envoy-fault-abort-grpc-request: <gRPC
/// code>`, `x-envoy-fault-abort-request-percentage: <0-100>`. A header fault replaces the
/// rule's fault of the same kind for that request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderFaults {
    /// Client networks allowed to request faults, e.g. `["10.0.0.0/8", "::1/128"]`; a bare
    /// address means that host. The client is Envoy's downstream remote address (the
    /// `source.address` property). Listeners the builder generates set `use_remote_address:
    /// true` and `xff_num_trusted_hops` (`--xff-trusted-hops N`, default 0), so it is the TCP
    /// peer, or with N trusted proxies the N-th `x-forwarded-for` entry from the right. A
    /// listener without `use_remote_address` makes it the last `x-forwarded-for` entry, which
    /// any client can write: do not use header faults there.
    pub trusted_cidrs: Vec<String>,
    /// Honour `x-envoy-fault-delay-request` (default `true`).
    #[serde(default = "default_true")]
    pub delay: bool,
    /// Honour `x-envoy-fault-abort-request` / `x-envoy-fault-abort-grpc-request` (default
    /// `true`).
    #[serde(default = "default_true")]
    pub abort: bool,
    /// Longest delay a header may ask for (default `"10s"`); longer requests are clamped so a
    /// client cannot park streams for hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    pub max_delay: Option<String>,
}

fn default_true() -> bool {
    true
}
