//! The canary filter's plugin configuration, as the builder emits it and the filter parses it.
//!
//! JSON, camelCase, unknown fields refused. Example:
//!
//! ```json
//! {
//!   "afterRouter": true,
//!   "splits": [{
//!     "name": "reviews",
//!     "members": [{"cluster": "reviews-v1", "weight": 90}, {"cluster": "reviews-v2", "weight": 10}],
//!     "sticky": {"header": "end-user", "setCookie": {"name": "sluice-reviews", "ttl": "24h"}},
//!     "schedule": {"steps": [{"weights": [90, 10], "hold": "10m"}, {"weights": [50, 50], "hold": "10m"},
//!                            {"weights": [0, 100], "hold": "0s"}]},
//!     "failover": true,
//!     "guard": {"canary": "reviews-v2",
//!               "failures": {"outcomes": ["5xx", "reset", "timeout"], "grpc": ["UNAVAILABLE"],
//!                            "latency": "800ms"},
//!               "minRequests": 100, "window": "30s", "margin": 0.02, "falseAlarm": 1e-6}
//!   }]
//! }
//! ```

use serde::{Deserialize, Serialize};

use crate::breaker::Outcome;
use crate::matching::HttpMatchRequest;

/// The whole plugin configuration of one canary filter instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryConfig {
    /// `true`: the sluice router runs first and names the split to resolve in `x-sluice-split`;
    /// the filter trusts that header and ignores `rules`. `false` (default, safe when running
    /// alone): client copies of the internal headers are stripped and `rules` pick the split.
    #[serde(default)]
    pub after_router: bool,
    /// The splits this filter can resolve, each with a unique `name`.
    pub splits: Vec<Split>,
    /// Rules evaluated in order when `afterRouter` is false; the first match names the split.
    /// A request no rule matches passes through untouched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<CanaryRule>,
}

/// A weighted set of clusters one request is spread over (an Istio weighted `route`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Split {
    /// Unique name; the router's `x-sluice-split` header and `rules[].split` refer to it, and
    /// it appears in metric names (`sluice.canary.split.<name>...`).
    pub name: String,
    /// The destinations, in order. The first is the stable one: sticky buckets are laid out in
    /// this order, so raising a later member's share only moves keys towards later members.
    pub members: Vec<Member>,
    /// Pins each client (by header, cookie or address) to one member; absent: every request
    /// picks at random by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// Progressive rollout: the weights change by themselves over time, replacing the
    /// members' `weight`s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// `true` (default): a member whose circuit breaker is open gets no traffic, its share goes
    /// to the healthy members; when none is healthy the filter answers 503 at once.
    #[serde(default = "default_true")]
    pub failover: bool,
    /// Halts the canary member when it fails measurably more often than the others (the
    /// baseline): see [`Guard`]. Absent: no guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Guard>,
}

/// The self-guarding canary: every worker counts requests and failures of the canary member
/// and of the baseline (every other member) in a sliding window kept in shared data; when a
/// one-sided two-proportion test says, at the `falseAlarm` probability, that the canary's
/// failure rate exceeds the baseline's by more than `margin`, the canary is halted: no new
/// request and no sticky user goes to it (users pinned to it are served by the baseline), a
/// schedule stops advancing, until a changed config of the split re-arms the guard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Guard {
    /// The cluster of the canary member; default: the split's last member (the first is the
    /// stable one, see `members`). Every other member is the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// Which finished requests count as failures; default: the default [`Failures`].
    #[serde(default)]
    pub failures: Failures,
    /// Requests each side (canary, baseline) must have in the window before the test runs;
    /// default 100, at least 10.
    #[cfg_attr(feature = "schema", schemars(range(min = 10)))]
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// Length of the sliding window (duration string); default `"30s"`, from 1s to 1h.
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    #[serde(default = "default_window")]
    pub window: String,
    /// Tolerated excess of the canary's failure rate over the baseline's, as a fraction
    /// (`0.02`: two percentage points); default 0, in `[0, 1)`.
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0, max = 1.0)))]
    #[serde(default)]
    pub margin: f64,
    /// Probability that one evaluation halts a canary that is no worse than the baseline plus
    /// `margin` (the test's significance level); default `1e-6`, in `(0, 0.5)`.
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0, max = 0.5)))]
    #[serde(default = "default_false_alarm")]
    pub false_alarm: f64,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            canary: None,
            failures: Failures::default(),
            min_requests: default_min_requests(),
            window: default_window(),
            margin: 0.0,
            false_alarm: default_false_alarm(),
        }
    }
}

/// What counts as a failure of a member, for its guard. A request that fails in none of these
/// ways is a success; one the client or Envoy itself ended (a client reset, a local reply of a
/// breaker or a fault) is not counted at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failures {
    /// Response kinds (names as the breaker's `countAs`); default `["5xx", "reset", "timeout"]`.
    /// A 5xx counts only when the upstream sent it (not a local reply of a breaker or a
    /// fault); resets and timeouts are read from Envoy's response flags.
    #[serde(default = "default_outcomes")]
    pub outcomes: Vec<Outcome>,
    /// gRPC statuses (canonical names, `UNAVAILABLE`, as Istio's `grpcStatus`) that count as
    /// failures of a gRPC request (request `content-type`
    /// `application/grpc...`): the `grpc-status` trailer, or header of a trailers-only
    /// response, sent by the upstream. Default: [`DEFAULT_GRPC_FAILURES`], the statuses that
    /// say the server failed; `[]` counts none.
    #[serde(default = "default_grpc")]
    pub grpc: Vec<String>,
    /// A response whose headers come later than this after the request's (duration string,
    /// `"800ms"`) counts as a failure; absent: no latency ceiling.
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
}

impl Default for Failures {
    fn default() -> Self {
        Self {
            outcomes: default_outcomes(),
            grpc: default_grpc(),
            latency: None,
        }
    }
}

/// Default [`Failures::outcomes`].
pub fn default_outcomes() -> Vec<Outcome> {
    vec![Outcome::Status5xx, Outcome::Reset, Outcome::Timeout]
}

/// Default [`Failures::grpc`]: the statuses that say the server, not the caller, failed. They
/// are the ones Envoy maps to a 5xx (`Grpc::Utility::grpcToHttpStatus`: 500, 503, 504), so a
/// gRPC canary is judged as an HTTP one is by its 5xx, less `UNIMPLEMENTED` (501), which
/// mostly means a client calling a method the service never had; list it to catch a canary
/// that dropped one. Caller errors (`INVALID_ARGUMENT`, `NOT_FOUND`, `PERMISSION_DENIED`, ...),
/// `CANCELLED` (the caller gave up) and `RESOURCE_EXHAUSTED` (quota) are not the member's fault.
pub const DEFAULT_GRPC_FAILURES: [&str; 5] = [
    "UNKNOWN",
    "DEADLINE_EXCEEDED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
];

fn default_grpc() -> Vec<String> {
    DEFAULT_GRPC_FAILURES.map(String::from).to_vec()
}

/// Default [`Guard::min_requests`].
pub const DEFAULT_MIN_REQUESTS: u32 = 100;

/// Default [`Guard::false_alarm`].
pub const DEFAULT_FALSE_ALARM: f64 = 1e-6;

fn default_min_requests() -> u32 {
    DEFAULT_MIN_REQUESTS
}

/// Default [`Guard::window`].
pub fn default_window() -> String {
    "30s".into()
}

fn default_false_alarm() -> f64 {
    DEFAULT_FALSE_ALARM
}

/// One destination of a split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Member {
    /// The Envoy cluster name written to `x-sluice-cluster` when this member is picked.
    pub cluster: String,
    /// Relative weight, as in Istio: any non-negative integers, normalised by their sum; 0 never
    /// receives traffic (except as the only member, which always does).
    #[serde(default)]
    pub weight: u32,
}

/// Where the sticky key comes from. Exactly one of `header`, `cookie`, `sourceAddress` may be
/// set; with none of them, `setCookie` is required and its cookie is the key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sticky {
    /// Request header whose value is the key (e.g. `end-user`); matched case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Cookie whose value is the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The client address (Envoy's downstream remote address, the `source.address` property,
    /// without the port) is the key. Generated listeners set `use_remote_address: true`, so it
    /// is the TCP peer, or with `--xff-trusted-hops N` the N-th `x-forwarded-for` entry from the
    /// right; never an address the client writes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_address: bool,
    /// When the request carries no key, the filter makes up a random one, uses it, and returns
    /// it in this cookie; later requests carrying the cookie hash to the same member, so a
    /// browser stays pinned. The cookie is also read as a key when the main source is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_cookie: Option<SetCookie>,
}

/// The cookie the filter sets to pin a client that brought no key of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetCookie {
    /// Cookie name (an RFC 6265 token).
    pub name: String,
    /// Lifetime, a duration string (`"24h"`), sent as `Max-Age` in whole seconds.
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    pub ttl: String,
    /// Cookie `Path`; default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A progressive rollout: step `i` applies once the holds of the steps before it have elapsed
/// since the schedule started (the first time any worker loaded it); the last step stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schedule {
    /// The steps, in order; at least one.
    pub steps: Vec<Step>,
    /// `true` freezes the schedule at the step it had reached when the paused config was
    /// loaded; setting it back to `false` resumes from there (the paused time does not count).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// One step of a [`Schedule`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// One weight per member, in the order of `members`.
    pub weights: Vec<u32>,
    /// How long this step lasts before the next one applies (duration string, `"10m"`).
    /// Ignored for the last step, which holds forever.
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    pub hold: String,
}

/// Names the split for the requests it matches, when the filter runs without the router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryRule {
    /// Istio `HTTPMatchRequest` blocks, OR-ed; empty matches every request.
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    /// The name of one of `splits`.
    pub split: String,
}

fn default_true() -> bool {
    true
}
