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

use crate::unique::FirstSeen;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::duration;

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// The breaker filter's plugin config (JSON, camelCase).
///
/// ```json
/// {"afterRouter": true,
///  "breakers": [{"cluster": "reviews-v2", "consecutiveErrors": 5, "interval": "10s",
///                "baseEjectionTime": "30s", "maxEjectionTime": "300s"}],
///  "default": {"consecutiveErrors": 20}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BreakerConfig {
    /// Where the breaker learns the request's cluster.
    ///
    /// - `true` (chained after the sluice router/canary): from the request header
    ///   [`BreakerConfig::cluster_header`], which the router wrote after stripping every client
    ///   copy, and which Envoy's route forwards on (`route.cluster_header`).
    /// - `false` (default, the breaker alone): from the cluster Envoy's route selected, read from
    ///   the `xds.cluster_name` property. No request header is trusted, so a client cannot
    ///   trip, dodge or probe someone else's breaker by sending a header. Verified on Envoy
    ///   1.40: the connection manager resolves the route (and with it the upstream cluster)
    ///   before the filter chain runs, so the property is set at request-headers time,
    ///   `cluster_header` routes included. Chained, the header is read instead: it is the
    ///   router's decision itself, whereas the property reflects the route as last resolved,
    ///   and an earlier filter that rewrote the routing header only cleared the route cache.
    #[serde(default)]
    pub after_router: bool,
    /// The header holding the destination cluster when `afterRouter` is true. Defaults to
    /// `x-sluice-cluster` ([`crate::wire::CLUSTER_HEADER`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_header: Option<String>,
    /// One breaker per cluster.
    #[serde(default)]
    pub breakers: Vec<Breaker>,
    /// Settings for clusters not listed in `breakers`; without it, those are never broken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<BreakerSettings>,
    /// What a rejection tells the client in `x-sluice-breaker`. `false` (default): only the
    /// reason, `open` or `overflow`, so no client learns internal cluster names
    /// (`outbound|9080|v2|ratings`). `true`: `<cluster> open|overflow`, for debugging; the
    /// cluster is always in the filter's logs and metrics.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detailed_replies: bool,
}

/// The breaker of one cluster: its name plus [`BreakerSettings`].
///
/// The settings fields are repeated rather than `#[serde(flatten)]`ed because serde cannot
/// combine `flatten` with `deny_unknown_fields`, and a misspelt field must be refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Breaker {
    /// The Envoy cluster this breaker guards.
    pub cluster: String,
    /// See [`BreakerSettings::consecutive_errors`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub consecutive_errors: Option<u32>,
    /// See [`BreakerSettings::error_ratio`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<ErrorRatio>,
    /// See [`BreakerSettings::interval`].
    #[serde(default = "default_interval")]
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    pub interval: String,
    /// See [`BreakerSettings::base_ejection_time`].
    #[serde(default = "default_base_ejection_time")]
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    pub base_ejection_time: String,
    /// See [`BreakerSettings::max_ejection_time`].
    #[serde(default = "default_max_ejection_time")]
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    pub max_ejection_time: String,
    /// See [`BreakerSettings::half_open_probes`].
    #[serde(default = "default_half_open_probes")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub half_open_probes: u32,
    /// See [`BreakerSettings::probe_timeout`].
    #[serde(default = "default_probe_timeout")]
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    pub probe_timeout: String,
    /// See [`BreakerSettings::count_as`].
    #[serde(default = "default_count_as")]
    pub count_as: Vec<Outcome>,
    /// See [`BreakerSettings::max_concurrent_requests`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<u32>,
    /// See [`BreakerSettings::max_ejection_percent`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(max = 100)))]
    pub max_ejection_percent: Option<u32>,
}

/// How a breaker trips, recovers and limits concurrency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BreakerSettings {
    /// Trip after this many consecutive errors (Istio's `consecutive5xxErrors`), counted across
    /// all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub consecutive_errors: Option<u32>,
    /// Trip when the share of errors within one `interval` reaches a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<ErrorRatio>,
    /// The error-ratio window, and the period after which a closed breaker forgets one trip.
    /// Default `"10s"` (Istio's outlier-detection interval).
    #[serde(default = "default_interval")]
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    pub interval: String,
    /// Ejection time of the first trip; trip `n` ejects for `n x` this. Default `"30s"`.
    #[serde(default = "default_base_ejection_time")]
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    pub base_ejection_time: String,
    /// Cap of the backed-off ejection time. Default `"300s"` (Envoy's default).
    #[serde(default = "default_max_ejection_time")]
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    pub max_ejection_time: String,
    /// How many requests may be in flight at once while half-open. Default 1.
    #[serde(default = "default_half_open_probes")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub half_open_probes: u32,
    /// How long a half-open probe may take. A probe still unfinished after it counts as a
    /// failed probe (the breaker opens again, for the next, longer ejection) and its slot is
    /// freed, checked at the next admission; so a client that holds a probe (a slow upload, a
    /// slow read) cannot keep the breaker half-open and every slot taken. Default `"10s"`.
    #[serde(default = "default_probe_timeout")]
    #[cfg_attr(feature = "schema", schemars(pattern(crate::duration::SCHEMA_PATTERN)))]
    pub probe_timeout: String,
    /// Which outcomes are errors. Default `["5xx"]`, which includes the 503/504 Envoy answers
    /// for connect failures, resets and timeouts.
    #[serde(default = "default_count_as")]
    pub count_as: Vec<Outcome>,
    /// Reject with `overflow` while this many requests to the cluster are in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<u32>,
    /// Cap (0..=100) on the share of a host's clusters whose breakers may be open at once, as
    /// Envoy's `outlier_detection.max_ejection_percent`: the host's clusters are the listed
    /// breakers of the same Istio port and host (`outbound|<port>|<subset>|<host>`), and a
    /// closed breaker trips only if `100 x (open + 1) <= maxEjectionPercent x clusters`, where
    /// `open` counts the host's breakers not closed (open or half-open). Otherwise the trip is
    /// skipped: the breaker stays closed and its error counts start again (as Envoy resets a
    /// host's consecutive errors after an ejection it refused). As Envoy (without
    /// `always_eject_one_host`), a cap under `100 / clusters` lets no breaker of the host trip.
    /// Default: no cap (100). Only on listed breakers (not `default`), whose cluster names are
    /// Istio's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(max = 100)))]
    pub max_ejection_percent: Option<u32>,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_errors: None,
            error_ratio: None,
            interval: default_interval(),
            base_ejection_time: default_base_ejection_time(),
            max_ejection_time: default_max_ejection_time(),
            half_open_probes: default_half_open_probes(),
            probe_timeout: default_probe_timeout(),
            count_as: default_count_as(),
            max_concurrent_requests: None,
            max_ejection_percent: None,
        }
    }
}

impl Breaker {
    /// The settings part of this breaker.
    pub fn settings(&self) -> BreakerSettings {
        BreakerSettings {
            consecutive_errors: self.consecutive_errors,
            error_ratio: self.error_ratio.clone(),
            interval: self.interval.clone(),
            base_ejection_time: self.base_ejection_time.clone(),
            max_ejection_time: self.max_ejection_time.clone(),
            half_open_probes: self.half_open_probes,
            probe_timeout: self.probe_timeout.clone(),
            count_as: self.count_as.clone(),
            max_concurrent_requests: self.max_concurrent_requests,
            max_ejection_percent: self.max_ejection_percent,
        }
    }

    /// A breaker for `cluster` with the given settings.
    pub fn new(cluster: impl Into<String>, settings: BreakerSettings) -> Self {
        Self {
            cluster: cluster.into(),
            consecutive_errors: settings.consecutive_errors,
            error_ratio: settings.error_ratio,
            interval: settings.interval,
            base_ejection_time: settings.base_ejection_time,
            max_ejection_time: settings.max_ejection_time,
            half_open_probes: settings.half_open_probes,
            probe_timeout: settings.probe_timeout,
            count_as: settings.count_as,
            max_concurrent_requests: settings.max_concurrent_requests,
            max_ejection_percent: settings.max_ejection_percent,
        }
    }
}

/// Trip on the share of errors in one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorRatio {
    /// Trip when `errors x 100 >= thresholdPercent x requests` (1..=100).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 100)))]
    pub threshold_percent: u32,
    /// ... and the window holds at least this many requests. Default 20.
    #[serde(default = "default_min_request_volume")]
    pub min_request_volume: u32,
}

/// A kind of upstream outcome that may count as an error (names as Envoy's `retry_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Outcome {
    /// Any 5xx response, from the upstream or generated by Envoy for it.
    #[serde(rename = "5xx")]
    Status5xx,
    /// 502, 503 or 504.
    #[serde(rename = "gateway-error")]
    GatewayError,
    /// Envoy could not connect to the upstream (response flag `UF`).
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The upstream reset the stream or closed the connection (`UR`, `UC`).
    #[serde(rename = "reset")]
    Reset,
    /// The upstream did not answer within the route timeout (`UT`).
    #[serde(rename = "timeout")]
    Timeout,
}

fn default_interval() -> String {
    "10s".into()
}
fn default_base_ejection_time() -> String {
    "30s".into()
}
fn default_max_ejection_time() -> String {
    "300s".into()
}
fn default_half_open_probes() -> u32 {
    1
}
fn default_probe_timeout() -> String {
    "10s".into()
}
fn default_count_as() -> Vec<Outcome> {
    vec![Outcome::Status5xx]
}
fn default_min_request_volume() -> u32 {
    20
}

/// Why a breaker config was refused; the message names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// Compiled config
// ---------------------------------------------------------------------------------------------

/// A set of [`Outcome`]s as a bitmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutcomeSet(u8);

impl OutcomeSet {
    fn bit(outcome: Outcome) -> u8 {
        match outcome {
            Outcome::Status5xx => 1,
            Outcome::GatewayError => 2,
            Outcome::ConnectFailure => 4,
            Outcome::Reset => 8,
            Outcome::Timeout => 16,
        }
    }

    /// Adds an outcome.
    pub fn insert(&mut self, outcome: Outcome) {
        self.0 |= Self::bit(outcome);
    }

    /// Whether the set holds `outcome`.
    pub fn contains(self, outcome: Outcome) -> bool {
        self.0 & Self::bit(outcome) != 0
    }

    fn intersects(self, other: OutcomeSet) -> bool {
        self.0 & other.0 != 0
    }
}

impl FromIterator<Outcome> for OutcomeSet {
    fn from_iter<I: IntoIterator<Item = Outcome>>(iter: I) -> Self {
        let mut set = OutcomeSet::default();
        for outcome in iter {
            set.insert(outcome);
        }
        set
    }
}

/// Validated settings of one breaker, durations in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Trip after this many consecutive errors.
    pub consecutive_errors: Option<u32>,
    /// Trip at this error percentage ...
    pub error_ratio_percent: Option<u32>,
    /// ... once the window holds this many requests.
    pub min_request_volume: u32,
    /// Window length and trip-decay period, ms (at least 1).
    pub interval_ms: u64,
    /// Ejection time of the first trip, ms.
    pub base_ejection_ms: u64,
    /// Cap of the ejection time, ms.
    pub max_ejection_ms: u64,
    /// Probes allowed in flight while half-open (at least 1).
    pub half_open_probes: u32,
    /// How long a probe may take before it counts as failed, ms (at least 1).
    pub probe_timeout_ms: u64,
    /// Outcomes counted as errors.
    pub count_as: OutcomeSet,
    /// In-flight limit across workers.
    pub max_concurrent_requests: Option<u32>,
    /// Cap on the open share of the host's clusters, percent (100: no cap).
    pub max_ejection_percent: u32,
}

impl Policy {
    /// Validates settings; `what` names the breaker in error messages.
    pub fn compile(settings: &BreakerSettings, what: &str) -> Result<Self, ConfigError> {
        let millis = |field: &str, text: &str| -> Result<u64, ConfigError> {
            let d =
                duration::parse(text).map_err(|e| ConfigError(format!("{what}: {field}: {e}")))?;
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            if ms == 0 {
                return Err(ConfigError(format!(
                    "{what}: {field} must be at least 1ms, got {text:?}"
                )));
            }
            Ok(ms)
        };
        let interval_ms = millis("interval", &settings.interval)?;
        let base_ejection_ms = millis("baseEjectionTime", &settings.base_ejection_time)?;
        let max_ejection_ms = millis("maxEjectionTime", &settings.max_ejection_time)?;
        let probe_timeout_ms = millis("probeTimeout", &settings.probe_timeout)?;
        if max_ejection_ms < base_ejection_ms {
            return Err(ConfigError(format!(
                "{what}: maxEjectionTime ({}) is shorter than baseEjectionTime ({})",
                settings.max_ejection_time, settings.base_ejection_time
            )));
        }
        if settings.consecutive_errors == Some(0) {
            return Err(ConfigError(format!(
                "{what}: consecutiveErrors must be at least 1 (omit it to disable)"
            )));
        }
        if settings.half_open_probes == 0 {
            return Err(ConfigError(format!(
                "{what}: halfOpenProbes must be at least 1, or the breaker could never close"
            )));
        }
        if settings.max_concurrent_requests == Some(0) {
            return Err(ConfigError(format!(
                "{what}: maxConcurrentRequests must be at least 1 (omit it for no limit)"
            )));
        }
        if settings.max_ejection_percent.is_some_and(|p| p > 100) {
            return Err(ConfigError(format!(
                "{what}: maxEjectionPercent must be within 0..=100, got {}",
                settings.max_ejection_percent.unwrap_or_default()
            )));
        }
        if let Some(ratio) = &settings.error_ratio {
            if !(1..=100).contains(&ratio.threshold_percent) {
                return Err(ConfigError(format!(
                    "{what}: errorRatio.thresholdPercent must be within 1..=100, got {}",
                    ratio.threshold_percent
                )));
            }
            if ratio.min_request_volume == 0 {
                return Err(ConfigError(format!(
                    "{what}: errorRatio.minRequestVolume must be at least 1"
                )));
            }
        }
        if settings.count_as.is_empty() {
            return Err(ConfigError(format!(
                "{what}: countAs is empty, so nothing could ever trip the breaker \
                 (use e.g. [\"5xx\"])"
            )));
        }
        if settings.consecutive_errors.is_none()
            && settings.error_ratio.is_none()
            && settings.max_concurrent_requests.is_none()
        {
            return Err(ConfigError(format!(
                "{what}: set at least one of consecutiveErrors, errorRatio or \
                 maxConcurrentRequests, or the breaker does nothing"
            )));
        }
        Ok(Self {
            consecutive_errors: settings.consecutive_errors,
            error_ratio_percent: settings.error_ratio.as_ref().map(|r| r.threshold_percent),
            min_request_volume: settings
                .error_ratio
                .as_ref()
                .map_or(0, |r| r.min_request_volume),
            interval_ms,
            base_ejection_ms,
            max_ejection_ms,
            half_open_probes: settings.half_open_probes,
            probe_timeout_ms,
            count_as: settings.count_as.iter().copied().collect(),
            max_concurrent_requests: settings.max_concurrent_requests,
            max_ejection_percent: settings.max_ejection_percent.unwrap_or(100),
        })
    }

    /// The ejection time of trip number `trips` (1 = first): `base x trips`, capped.
    pub fn ejection_ms(&self, trips: u32) -> u64 {
        self.base_ejection_ms
            .saturating_mul(u64::from(trips.max(1)))
            .min(self.max_ejection_ms)
    }

    /// Whether outcomes must be written even when they change nothing but counters; false
    /// lets a closed breaker that only counts consecutive errors skip the write on success.
    fn tracks_window(&self) -> bool {
        self.error_ratio_percent.is_some()
    }
}

/// A validated [`BreakerConfig`].
#[derive(Debug, Clone)]
pub struct CompiledBreakers {
    /// See [`BreakerConfig::after_router`].
    pub after_router: bool,
    /// The header read for the cluster when `after_router` (lower case).
    pub cluster_header: String,
    /// Policies of the listed clusters, in config order.
    by_cluster: Vec<(String, Policy)>,
    /// Where each listed cluster is in `by_cluster`. A [`FirstSeen`] rather than a `BTreeMap`:
    /// the modules already carry its map code, a B-tree of policies was ~4.4 KB of wasm.
    index: FirstSeen,
    /// Policy for any other cluster.
    pub default: Option<Policy>,
    /// See [`BreakerConfig::detailed_replies`].
    pub detailed_replies: bool,
}

impl PartialEq for CompiledBreakers {
    fn eq(&self, other: &Self) -> bool {
        // `index` is derived from `by_cluster`.
        self.after_router == other.after_router
            && self.detailed_replies == other.detailed_replies
            && self.cluster_header == other.cluster_header
            && self.by_cluster == other.by_cluster
            && self.default == other.default
    }
}

impl Eq for CompiledBreakers {}

impl CompiledBreakers {
    /// The policy guarding `cluster`, if any.
    pub fn policy_for(&self, cluster: &str) -> Option<&Policy> {
        self.index
            .get(cluster)
            .and_then(|i| self.by_cluster.get(i))
            .map(|(_, policy)| policy)
            .or(self.default.as_ref())
    }

    /// The listed clusters, in config order.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.by_cluster.iter().map(|(cluster, _)| cluster.as_str())
    }

    /// The other listed clusters of `cluster`'s host ([`host_siblings`]), which its
    /// `maxEjectionPercent` counts; empty when `cluster` has no cap (or is not listed), so a
    /// breaker without a cap never reads them.
    pub fn siblings(&self, cluster: &str) -> Vec<&str> {
        match self.index.get(cluster).and_then(|i| self.by_cluster.get(i)) {
            Some((_, policy)) if policy.max_ejection_percent < 100 => {
                host_siblings(cluster, self.clusters())
            }
            _ => Vec::new(),
        }
    }
}

/// The port and host of an Istio outbound cluster name, `outbound|<port>|<subset>|<host>`
/// (`subset` may be empty); `None` for any other name.
pub fn istio_port_host(cluster: &str) -> Option<(&str, &str)> {
    let mut parts = cluster.split('|');
    let (Some("outbound"), Some(port), Some(_subset), Some(host), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let numeric = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    (numeric && !host.is_empty()).then_some((port, host))
}

/// The clusters of `listed` with the same Istio port and host as `cluster`, other than
/// `cluster` itself, in `listed` order: the members of its host that a `maxEjectionPercent`
/// cap counts. Empty when `cluster` is not an Istio outbound name.
pub fn host_siblings<'a>(cluster: &str, listed: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let Some(own) = istio_port_host(cluster) else {
        return Vec::new();
    };
    listed
        .filter(|other| *other != cluster && istio_port_host(other) == Some(own))
        .collect()
}

/// Whether one more breaker of a host may open, as Envoy's outlier detection decides an
/// ejection (`ejectHost`, Envoy 1.31 and later): with `open` of the host's `members` already
/// open, the share after this trip, `100 x (open + 1) / members` percent, must not exceed
/// `max_percent`. Computed exactly in integers (Envoy compares the same quotient as a double).
/// There is no floor of one ejection: Envoy ejects a first host regardless only with
/// `always_eject_one_host`, which is off by default, and sluice has no such switch.
pub fn ejection_allowed(open: u32, members: u32, max_percent: u32) -> bool {
    u64::from(open).saturating_add(1).saturating_mul(100)
        <= u64::from(max_percent).saturating_mul(u64::from(members))
}

impl BreakerConfig {
    /// Parses the plugin config JSON, naming the offending field on error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        crate::json::from_slice(bytes)
            .map_err(|e| ConfigError(format!("invalid breaker config: {e}")))
    }

    /// Validates the config; every error names the breaker and field.
    pub fn compile(&self) -> Result<CompiledBreakers, ConfigError> {
        let cluster_header = match &self.cluster_header {
            None => crate::wire::CLUSTER_HEADER.to_string(),
            Some(h) => {
                let valid = !h.is_empty()
                    && h.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    });
                if !valid {
                    return Err(ConfigError(format!(
                        "clusterHeader {h:?} must be a lower-case header name ([a-z0-9_-]+)"
                    )));
                }
                if !self.after_router {
                    return Err(ConfigError(
                        "clusterHeader is only read when afterRouter is true; alone, the \
                         breaker keys on the cluster Envoy's route selected"
                            .into(),
                    ));
                }
                h.clone()
            }
        };
        let mut by_cluster = Vec::with_capacity(self.breakers.len());
        let mut index = FirstSeen::new();
        for (i, breaker) in self.breakers.iter().enumerate() {
            if breaker.cluster.is_empty() {
                return Err(ConfigError(format!("breakers[{i}].cluster is empty")));
            }
            let what = format!("breakers[{i}] (cluster {:?})", breaker.cluster);
            let policy = Policy::compile(&breaker.settings(), &what)?;
            if index.insert(&breaker.cluster, by_cluster.len()).is_some() {
                return Err(ConfigError(format!(
                    "{what}: cluster listed twice; merge the two breakers"
                )));
            }
            if breaker.max_ejection_percent.is_some() && istio_port_host(&breaker.cluster).is_none()
            {
                return Err(ConfigError(format!(
                    "{what}: maxEjectionPercent needs an Istio cluster name \
                     (outbound|<port>|<subset>|<host>): it caps the open share of the \
                     clusters of one port and host"
                )));
            }
            by_cluster.push((breaker.cluster.clone(), policy));
        }
        let default = match &self.default {
            Some(settings) if settings.max_ejection_percent.is_some() => {
                return Err(ConfigError(
                    "default: maxEjectionPercent is only for listed breakers (it counts the \
                     listed clusters of a host)"
                        .into(),
                ));
            }
            Some(settings) => Some(Policy::compile(settings, "default")?),
            None => None,
        };
        if by_cluster.is_empty() && default.is_none() {
            return Err(ConfigError(
                "no breakers: list clusters in \"breakers\" or set \"default\"".into(),
            ));
        }
        Ok(CompiledBreakers {
            after_router: self.after_router,
            cluster_header,
            by_cluster,
            index,
            default,
            detailed_replies: self.detailed_replies,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// State and its encoding
// ---------------------------------------------------------------------------------------------

/// The phase of a breaker. The numbers are the `state` gauge's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Traffic flows; errors are counted.
    #[default]
    Closed = 0,
    /// Traffic is rejected until `open_until_ms`.
    Open = 1,
    /// A few probes go through; their outcome decides.
    HalfOpen = 2,
}

impl Phase {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Closed),
            1 => Some(Self::Open),
            2 => Some(Self::HalfOpen),
            _ => None,
        }
    }
}

/// The state of one cluster's breaker, shared by all workers. Times are ms since the Unix epoch
/// (proxy-wasm's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BreakerState {
    /// Current phase as stored; see [`BreakerState::effective_phase`].
    pub phase: Phase,
    /// Trips not yet forgotten; drives the ejection back-off.
    pub trips: u32,
    /// Incremented on every trip, so a late probe outcome from an earlier half-open episode
    /// cannot decide the current one.
    pub generation: u32,
    /// Errors since the last success.
    pub consecutive_errors: u32,
    /// Start of the error-ratio window.
    pub window_start_ms: u64,
    /// Requests recorded in the window.
    pub window_requests: u32,
    /// Errors recorded in the window.
    pub window_errors: u32,
    /// End of the current ejection (meaningful while open).
    pub open_until_ms: u64,
    /// When the breaker last closed after a trip (for the trip decay); 0 if never.
    pub closed_since_ms: u64,
    /// Half-open probes admitted and not finished.
    pub probes_in_flight: u32,
    /// Admitted requests that hold an in-flight slot (only counted with a concurrency limit).
    pub in_flight: u32,
    /// The breaker's `halfOpenProbes`, written with each probe admitted, so that other filters
    /// (the canary) can tell a half-open breaker with every probe slot taken.
    pub probe_slots: u32,
    /// Deadline of the oldest probe still in flight (its admission plus `probeTimeout`); 0 when
    /// no probe is in flight. Past it, the next admission counts the probe as failed.
    pub probe_deadline_ms: u64,
}

/// Version byte of the encoding; a value with another version decodes as `None`. Version 2
/// added `probe_slots` and `probe_deadline_ms`.
pub const ENCODING_VERSION: u8 = 2;
/// Length of an encoded [`BreakerState`]: version, phase, 8 x u32, 4 x u64, little endian.
pub const ENCODED_LEN: usize = 2 + 8 * 4 + 4 * 8;

impl BreakerState {
    /// The compact binary form stored in shared data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(ENCODING_VERSION);
        out.push(self.phase as u8);
        for v in [
            self.trips,
            self.generation,
            self.consecutive_errors,
            self.window_requests,
            self.window_errors,
            self.probes_in_flight,
            self.in_flight,
            self.probe_slots,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            self.window_start_ms,
            self.open_until_ms,
            self.closed_since_ms,
            self.probe_deadline_ms,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Decodes [`BreakerState::encode`]'s output; `None` for anything else (other version,
    /// wrong length, unknown phase).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ENCODED_LEN {
            return None;
        }
        let (&[version, phase], mut rest) = bytes.split_first_chunk::<2>()?;
        if version != ENCODING_VERSION {
            return None;
        }
        let mut u32s = [0u32; 8];
        for slot in &mut u32s {
            let (chunk, tail) = rest.split_first_chunk::<4>()?;
            *slot = u32::from_le_bytes(*chunk);
            rest = tail;
        }
        let mut u64s = [0u64; 4];
        for slot in &mut u64s {
            let (chunk, tail) = rest.split_first_chunk::<8>()?;
            *slot = u64::from_le_bytes(*chunk);
            rest = tail;
        }
        let [
            trips,
            generation,
            consecutive_errors,
            window_requests,
            window_errors,
            probes_in_flight,
            in_flight,
            probe_slots,
        ] = u32s;
        let [
            window_start_ms,
            open_until_ms,
            closed_since_ms,
            probe_deadline_ms,
        ] = u64s;
        Some(Self {
            phase: Phase::from_u8(phase)?,
            trips,
            generation,
            consecutive_errors,
            window_start_ms,
            window_requests,
            window_errors,
            open_until_ms,
            closed_since_ms,
            probes_in_flight,
            in_flight,
            probe_slots,
            probe_deadline_ms,
        })
    }

    /// The phase as seen at `now`: an open breaker whose ejection time is over is half-open
    /// (the stored phase moves on at the next admission).
    pub fn effective_phase(&self, now_ms: u64) -> Phase {
        match self.phase {
            Phase::Open if now_ms >= self.open_until_ms => Phase::HalfOpen,
            phase => phase,
        }
    }

    /// Whether the breaker rejects all traffic at `now`: open, ejection not over.
    pub fn is_open(&self, now_ms: u64) -> bool {
        self.effective_phase(now_ms) == Phase::Open
    }

    /// [`is_open`](Self::is_open) with the clock read only for a stored open phase (the one
    /// phase whose meaning depends on the time); `now_ms` is called at most once.
    pub fn is_open_with_clock(&self, now_ms: impl FnOnce() -> u64) -> bool {
        self.phase == Phase::Open && now_ms() < self.open_until_ms
    }

    /// Whether the breaker takes no new request at `now`: open with the ejection not over, or
    /// half-open with every probe slot taken by a probe still within its `probeTimeout`. (A
    /// probe past its deadline is reclaimed by the next admission, which reopens the breaker;
    /// such a breaker counts as available so that a request reaches the breaker to do it.)
    /// The clock is read only for those two stored states; `now_ms` is called at most once.
    pub fn is_unavailable_with_clock(&self, now_ms: impl FnOnce() -> u64) -> bool {
        match self.phase {
            Phase::Open => now_ms() < self.open_until_ms,
            Phase::HalfOpen => {
                self.probe_slots > 0
                    && self.probes_in_flight >= self.probe_slots
                    && now_ms() < self.probe_deadline_ms
            }
            Phase::Closed => false,
        }
    }
}

/// The shared-data key of `cluster`'s breaker state: `sluice.breaker.<cluster>`.
pub fn shared_data_key(cluster: &str) -> String {
    let mut key = String::with_capacity(crate::wire::BREAKER_KEY_PREFIX.len() + cluster.len());
    key.push_str(crate::wire::BREAKER_KEY_PREFIX);
    key.push_str(cluster);
    key
}

/// For other filters (the canary): whether the cluster whose shared-data value is `value`
/// takes no new request now ([`BreakerState::is_unavailable_with_clock`]): open, or half-open
/// with every probe slot taken by a probe within its deadline. `value` is what
/// `get_shared_data(shared_data_key(cluster))` returned; no value, or one this version cannot
/// decode, means "available". Half-open with a free probe slot counts as available: the
/// breaker lets that probe through.
pub fn is_unavailable(value: Option<&[u8]>, now_ms: u64) -> bool {
    is_unavailable_with_clock(value, || now_ms)
}

/// [`is_unavailable`] with the clock read only when the value decodes to a stored open phase
/// or a half-open one with every probe slot taken: a closed breaker (the healthy case) is
/// answered without a time, so a failover check costs no clock host call. `now_ms` is called
/// at most once.
pub fn is_unavailable_with_clock(value: Option<&[u8]>, now_ms: impl FnOnce() -> u64) -> bool {
    value
        .and_then(BreakerState::decode)
        .is_some_and(|state| state.is_unavailable_with_clock(now_ms))
}

// ---------------------------------------------------------------------------------------------
// Transitions
// ---------------------------------------------------------------------------------------------

/// Why a request was rejected; the text after the cluster in `x-sluice-breaker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Open, or half-open with every probe slot taken.
    Open,
    /// Half-open, and a probe was past its `probeTimeout`: counted as a failed probe, so this
    /// admission opened the breaker again (a trip, for the caller's counters and log).
    ProbeOverrun {
        /// How long the breaker stays open.
        ejection_ms: u64,
    },
    /// The in-flight limit is reached.
    Overflow,
}

impl Rejection {
    /// `"open"` or `"overflow"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open | Self::ProbeOverrun { .. } => "open",
            Self::Overflow => "overflow",
        }
    }
}

/// What an admitted request carries until its outcome is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Admitted as a half-open probe.
    pub probe: bool,
    /// Took an in-flight slot that must be given back.
    pub holds_slot: bool,
    /// The state's generation at admission.
    pub generation: u32,
}

impl Ticket {
    /// Whether recording `verdict` with this ticket can change any breaker state. An ignored
    /// outcome (client gone, fault abort, Envoy's own overflow, no response) of a request that
    /// holds no in-flight slot and is no probe changes nothing in any state, so the caller may
    /// skip reading the shared state at all.
    pub fn records_anything(self, verdict: Verdict) -> bool {
        verdict != Verdict::Ignored || self.probe || self.holds_slot
    }
}

/// The admission decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward the request; record its outcome with the ticket.
    Admit(Ticket),
    /// Answer 503 at once.
    Reject(Rejection),
}

/// What an outcome means to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The upstream answered well.
    Success,
    /// An error of a counted kind.
    Failure,
    /// Says nothing about the upstream (client went away, no route, ...).
    Ignored,
}

/// A phase change caused by a recorded outcome, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed phase.
    None,
    /// Closed or half-open -> open, for `ejection_ms`.
    Tripped {
        /// How long the breaker stays open.
        ejection_ms: u64,
    },
    /// Half-open -> closed.
    Closed,
    /// A closed breaker reached its threshold, but opening it would exceed its host's
    /// `maxEjectionPercent`: it stays closed, its error counts start again.
    TripSkipped,
}

impl BreakerState {
    /// Decides on a new request at `now`. Returns the decision and the new state if it changed
    /// (open -> half-open, a probe or in-flight slot taken).
    pub fn admit(&self, policy: &Policy, now_ms: u64) -> (Decision, Option<Self>) {
        self.admit_with_clock(policy, || now_ms)
    }

    /// [`admit`](Self::admit) with the clock read only when the decision depends on it: an
    /// open breaker whose ejection may be over, a half-open one with a probe in flight (whose
    /// deadline may be over), a probe admitted (its deadline is stamped). A closed breaker
    /// decides without a time, which saves the caller a host call per request on a healthy
    /// breaker. `now_ms` is called at most once.
    ///
    /// Half-open with a probe past its `probeTimeout`: the probe counts as failed, the breaker
    /// opens again for the next ejection ([`Rejection::ProbeOverrun`]), every probe slot is
    /// free for the next episode, and the late probe's own outcome, whenever it comes, belongs
    /// to an earlier episode and decides nothing.
    pub fn admit_with_clock(
        &self,
        policy: &Policy,
        now_ms: impl FnOnce() -> u64,
    ) -> (Decision, Option<Self>) {
        let mut clock_fn = Some(now_ms);
        let mut cached = None;
        let mut now = || *cached.get_or_insert_with(|| clock_fn.take().map_or(0, |f| f()));
        let mut next = *self;
        if next.phase == Phase::Open && now() >= next.open_until_ms {
            next.phase = Phase::HalfOpen;
            next.probes_in_flight = 0;
            next.probe_deadline_ms = 0;
        }
        let changed = |next: Self| (next != *self).then_some(next);
        if next.phase == Phase::HalfOpen
            && next.probes_in_flight > 0
            && now() >= next.probe_deadline_ms
        {
            let ejection_ms = next.trip(policy, now());
            return (
                Decision::Reject(Rejection::ProbeOverrun { ejection_ms }),
                changed(next),
            );
        }
        match next.phase {
            Phase::Open => return (Decision::Reject(Rejection::Open), changed(next)),
            Phase::HalfOpen if next.probes_in_flight >= policy.half_open_probes => {
                return (Decision::Reject(Rejection::Open), changed(next));
            }
            Phase::HalfOpen | Phase::Closed => {}
        }
        let mut holds_slot = false;
        if let Some(limit) = policy.max_concurrent_requests {
            if next.in_flight >= limit {
                return (Decision::Reject(Rejection::Overflow), changed(next));
            }
            next.in_flight = next.in_flight.saturating_add(1);
            holds_slot = true;
        }
        let probe = next.phase == Phase::HalfOpen;
        if probe {
            if next.probes_in_flight == 0 {
                next.probe_deadline_ms = now().saturating_add(policy.probe_timeout_ms);
            }
            next.probes_in_flight = next.probes_in_flight.saturating_add(1);
            next.probe_slots = policy.half_open_probes;
        }
        let ticket = Ticket {
            probe,
            holds_slot,
            generation: next.generation,
        };
        (Decision::Admit(ticket), changed(next))
    }

    /// Records the outcome of a request admitted with `ticket`. Returns the phase change and the
    /// new state if it changed.
    pub fn record(
        &self,
        policy: &Policy,
        ticket: Ticket,
        verdict: Verdict,
        now_ms: u64,
    ) -> (Transition, Option<Self>) {
        self.record_with_clock(policy, ticket, verdict, || now_ms)
    }

    /// [`record`](Self::record) with the clock read only when the outcome uses it: a ratio
    /// window to roll, a trip, or a half-open episode closing. Any other outcome (the common
    /// success on a closed consecutive-errors breaker, an ignored one, an error below the
    /// threshold) never calls `now_ms`, which saves the caller a host call per healthy request.
    /// `now_ms` is called at most once.
    pub fn record_with_clock(
        &self,
        policy: &Policy,
        ticket: Ticket,
        verdict: Verdict,
        now_ms: impl FnMut() -> u64,
    ) -> (Transition, Option<Self>) {
        self.record_capped(policy, ticket, verdict, now_ms, || true)
    }

    /// [`record_with_clock`](Self::record_with_clock) under the host's `maxEjectionPercent`:
    /// when a closed breaker reaches its threshold and its policy has a cap (under 100),
    /// `may_trip` is asked whether it may open (the caller reads the host's other breakers and
    /// answers with [`ejection_allowed`]); if not, the breaker stays closed, its consecutive
    /// errors and window start again, and the transition is [`Transition::TripSkipped`].
    /// `may_trip` is called only then (never on a success, an error below the threshold, a
    /// half-open probe failing: that breaker is already counted as not closed), at most once.
    pub fn record_capped(
        &self,
        policy: &Policy,
        ticket: Ticket,
        verdict: Verdict,
        mut now_ms: impl FnMut() -> u64,
        may_trip: impl FnOnce() -> bool,
    ) -> (Transition, Option<Self>) {
        let mut clock = None;
        let mut now_ms = || *clock.get_or_insert_with(&mut now_ms);
        let mut next = *self;
        if ticket.holds_slot {
            next.in_flight = next.in_flight.saturating_sub(1);
        }
        // Only a probe of the current half-open episode decides it; results of requests
        // admitted before a trip are counted but never reopen or close anything.
        let decides =
            ticket.probe && next.phase == Phase::HalfOpen && next.generation == ticket.generation;
        let mut transition = Transition::None;
        match verdict {
            Verdict::Ignored => {
                if decides {
                    next.probes_in_flight = next.probes_in_flight.saturating_sub(1);
                    // The deadline is the oldest probe's; it is kept (conservatively) while
                    // other probes are in flight, and cleared with the last.
                    if next.probes_in_flight == 0 {
                        next.probe_deadline_ms = 0;
                    }
                }
            }
            Verdict::Success => {
                if policy.consecutive_errors.is_some() {
                    next.consecutive_errors = 0;
                }
                if policy.tracks_window() {
                    next.roll_window(policy, now_ms());
                    next.window_requests = next.window_requests.saturating_add(1);
                }
                if decides {
                    next.phase = Phase::Closed;
                    next.probes_in_flight = 0;
                    next.probe_deadline_ms = 0;
                    next.consecutive_errors = 0;
                    let now = now_ms();
                    next.closed_since_ms = now;
                    next.reset_window(now);
                    transition = Transition::Closed;
                }
            }
            Verdict::Failure => {
                if policy.consecutive_errors.is_some() {
                    next.consecutive_errors = next.consecutive_errors.saturating_add(1);
                }
                if policy.tracks_window() {
                    next.roll_window(policy, now_ms());
                    next.window_requests = next.window_requests.saturating_add(1);
                    next.window_errors = next.window_errors.saturating_add(1);
                }
                let trip = match next.phase {
                    Phase::Closed => next.over_threshold(policy),
                    Phase::HalfOpen => decides,
                    Phase::Open => false,
                };
                if trip
                    && next.phase == Phase::Closed
                    && policy.max_ejection_percent < 100
                    && !may_trip()
                {
                    next.consecutive_errors = 0;
                    next.reset_window(now_ms());
                    transition = Transition::TripSkipped;
                } else if trip {
                    transition = Transition::Tripped {
                        ejection_ms: next.trip(policy, now_ms()),
                    };
                }
            }
        }
        (transition, (next != *self).then_some(next))
    }

    fn over_threshold(&self, policy: &Policy) -> bool {
        let consecutive = policy
            .consecutive_errors
            .is_some_and(|n| self.consecutive_errors >= n);
        let ratio = policy.error_ratio_percent.is_some_and(|percent| {
            self.window_requests >= policy.min_request_volume
                && u64::from(self.window_errors) * 100
                    >= u64::from(percent) * u64::from(self.window_requests)
        });
        consecutive || ratio
    }

    /// Opens the breaker; returns the ejection time.
    fn trip(&mut self, policy: &Policy, now_ms: u64) -> u64 {
        let remembered = if self.phase == Phase::Closed && self.closed_since_ms > 0 {
            let healthy_intervals =
                now_ms.saturating_sub(self.closed_since_ms) / policy.interval_ms;
            self.trips
                .saturating_sub(u32::try_from(healthy_intervals).unwrap_or(u32::MAX))
        } else {
            self.trips
        };
        self.trips = remembered.saturating_add(1);
        let ejection_ms = policy.ejection_ms(self.trips);
        self.phase = Phase::Open;
        self.open_until_ms = now_ms.saturating_add(ejection_ms);
        self.generation = self.generation.wrapping_add(1);
        self.consecutive_errors = 0;
        self.probes_in_flight = 0;
        self.probe_deadline_ms = 0;
        self.reset_window(now_ms);
        ejection_ms
    }

    fn roll_window(&mut self, policy: &Policy, now_ms: u64) {
        // A clock that went backwards also starts a new window rather than extending one.
        if now_ms < self.window_start_ms || now_ms - self.window_start_ms >= policy.interval_ms {
            self.reset_window(now_ms);
        }
    }

    fn reset_window(&mut self, now_ms: u64) {
        self.window_start_ms = now_ms;
        self.window_requests = 0;
        self.window_errors = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// Outcome classification
// ---------------------------------------------------------------------------------------------

/// Envoy's legacy response-flag bits, as the `response.flags` property reports them
/// (`StreamInfo::legacyResponseFlags()`).
pub mod response_flags {
    /// `UH`: no healthy upstream host.
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    /// `UT`: upstream request timeout.
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    /// `LR`: Envoy reset the stream locally.
    pub const LOCAL_RESET: u64 = 0x8;
    /// `UR`: the upstream reset the stream.
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    /// `UF`: connecting to the upstream failed.
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    /// `UC`: the upstream connection closed mid-stream.
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    /// `UO`: Envoy's own circuit breaker or pool overflowed.
    pub const UPSTREAM_OVERFLOW: u64 = 0x80;
    /// `NR`: no route.
    pub const NO_ROUTE_FOUND: u64 = 0x100;
    /// `FI`: fault filter abort.
    pub const FAULT_INJECTED: u64 = 0x400;
    /// `RL`: rate limited.
    pub const RATE_LIMITED: u64 = 0x800;
    /// `UAEX`: external authorization denied.
    pub const UNAUTHORIZED_EXTERNAL_SERVICE: u64 = 0x1000;
    /// `DC`: the downstream connection terminated.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: u64 = 0x4000;
    /// `UMSDR`: upstream max stream duration reached.
    pub const UPSTREAM_MAX_STREAM_DURATION_REACHED: u64 = 0x8_0000;
    /// `UPE`: upstream protocol error.
    pub const UPSTREAM_PROTOCOL_ERROR: u64 = 0x80_0000;
    /// `NC`: no cluster found.
    pub const NO_CLUSTER_FOUND: u64 = 0x100_0000;
    /// `OM`: overload manager.
    pub const OVERLOAD_MANAGER: u64 = 0x200_0000;
    /// `DR`: the downstream reset the stream.
    pub const DOWNSTREAM_REMOTE_RESET: u64 = 0x1000_0000;
}

/// Flags saying the request did not fail because of the upstream: Envoy or the client decided.
const NOT_THE_UPSTREAMS_FAULT: u64 = response_flags::NO_ROUTE_FOUND
    | response_flags::NO_CLUSTER_FOUND
    | response_flags::FAULT_INJECTED
    | response_flags::RATE_LIMITED
    | response_flags::UNAUTHORIZED_EXTERNAL_SERVICE
    | response_flags::UPSTREAM_OVERFLOW
    | response_flags::OVERLOAD_MANAGER
    | response_flags::DOWNSTREAM_CONNECTION_TERMINATION
    | response_flags::DOWNSTREAM_REMOTE_RESET;

/// The kinds of [`Outcome`] a finished request shows.
pub fn observed(code: Option<u32>, flags: u64) -> OutcomeSet {
    use response_flags as f;
    let mut seen = OutcomeSet::default();
    if let Some(code) = code {
        if (500..600).contains(&code) {
            seen.insert(Outcome::Status5xx);
        }
        if matches!(code, 502..=504) {
            seen.insert(Outcome::GatewayError);
        }
    }
    if flags & f::UPSTREAM_CONNECTION_FAILURE != 0 {
        seen.insert(Outcome::ConnectFailure);
    }
    if flags
        & (f::UPSTREAM_REMOTE_RESET
            | f::UPSTREAM_CONNECTION_TERMINATION
            | f::UPSTREAM_PROTOCOL_ERROR)
        != 0
    {
        seen.insert(Outcome::Reset);
    }
    if flags & (f::UPSTREAM_REQUEST_TIMEOUT | f::UPSTREAM_MAX_STREAM_DURATION_REACHED) != 0 {
        seen.insert(Outcome::Timeout);
    }
    seen
}

/// Classifies a finished request from Envoy's `response.code` (None or 0 when no response was
/// sent) and `response.flags`.
///
/// Requests that Envoy or the client ended (no route, fault abort, client disconnect, Envoy's
/// own overflow) are [`Verdict::Ignored`]: they say nothing about the upstream. A response
/// with no code and no upstream error flag is ignored too. The breaker's own rejections are
/// never classified: the filter records only requests it admitted.
pub fn classify(code: Option<u32>, flags: u64, count_as: OutcomeSet) -> Verdict {
    classify_with_code(flags, || code, count_as)
}

/// [`classify`] with the response code asked for only when the flags leave the verdict open:
/// a flag saying Envoy or the client ended the request makes it [`Verdict::Ignored`] whatever
/// the code, which saves the caller the `response.code` host call. `code` is called at most
/// once.
pub fn classify_with_code(
    flags: u64,
    code: impl FnOnce() -> Option<u32>,
    count_as: OutcomeSet,
) -> Verdict {
    if flags & NOT_THE_UPSTREAMS_FAULT != 0 {
        return Verdict::Ignored;
    }
    let code = code().filter(|&c| c != 0);
    if observed(code, flags).intersects(count_as) {
        return Verdict::Failure;
    }
    if code.is_none() {
        return Verdict::Ignored;
    }
    Verdict::Success
}

// ---------------------------------------------------------------------------------------------
// Shared store and the CAS loop
// ---------------------------------------------------------------------------------------------

/// Why a shared-data write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Another writer changed the value since it was read; read again and retry.
    CasMismatch,
    /// The host refused for another reason.
    Other,
}

/// Proxy-wasm shared data as the breaker uses it: get returns the value and its CAS token
/// (both `None` when the key does not exist), set succeeds only if the token still matches.
pub trait SharedStore {
    /// Reads `key`.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `key` if its CAS token is still `cas` (`None` only to create a missing key).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// How many times [`update`] re-reads after a CAS conflict before giving up. Conflicts need
/// another worker to write in the microseconds between our get and set; 64 rounds means
/// dozens of workers hammering one key.
pub const MAX_CAS_ATTEMPTS: u32 = 64;

/// Why [`update`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// Every attempt lost a CAS race.
    Contended,
    /// The host refused the write.
    Store,
}

/// Reads `key`, lets `step` compute a result and maybe a new state, and writes the new state
/// with compare-and-set, retrying from a fresh read on conflict (at most
/// [`MAX_CAS_ATTEMPTS`]). `step` must be a pure function of the state: it may run several times.
///
/// A missing key is created with `cas = None`, the only unconditional write: it can overwrite
/// an update another worker made between our read and our create of the same brand-new key.
/// The filter creates the keys of listed clusters at configure time, before traffic, so this
/// window exists only at the first request to an unlisted cluster. A value that does not
/// decode (another encoding version) is replaced, with CAS, by a fresh closed state.
pub fn update<S: SharedStore + ?Sized, T>(
    store: &S,
    key: &str,
    step: impl FnMut(&BreakerState) -> (T, Option<BreakerState>),
) -> Result<(T, BreakerState), UpdateError> {
    update_from(store, key, None, step)
}

/// What [`SharedStore::get`] returned: the value and its CAS token.
pub type Snapshot = (Option<Vec<u8>>, Option<u32>);

/// [`update`], starting from `snapshot` when the caller has just read `key` (the suite reads a
/// member's breaker for the canary's failover, then admits through the same breaker): one
/// shared-data read fewer per request, and as exact. A decision that writes nothing is the
/// decision at the time of that read; one that writes is CAS-checked against it, and a
/// conflict re-reads the store as usual.
pub fn update_from<S: SharedStore + ?Sized, T>(
    store: &S,
    key: &str,
    mut snapshot: Option<Snapshot>,
    mut step: impl FnMut(&BreakerState) -> (T, Option<BreakerState>),
) -> Result<(T, BreakerState), UpdateError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = snapshot.take().unwrap_or_else(|| store.get(key));
        let current = value
            .as_deref()
            .and_then(BreakerState::decode)
            .unwrap_or_default();
        let (out, next) = step(&current);
        let Some(next) = next else {
            return Ok((out, current));
        };
        let cas = if value.is_some() { cas } else { None };
        match store.set(key, &next.encode(), cas) {
            Ok(()) => return Ok((out, next)),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Other) => return Err(UpdateError::Store),
        }
    }
    Err(UpdateError::Contended)
}

/// Creates `key` with a fresh closed state if it does not exist yet (never touches an existing
/// value, so a config reload keeps the breakers' state).
pub fn ensure_exists<S: SharedStore + ?Sized>(store: &S, key: &str) -> Result<(), UpdateError> {
    match store.get(key) {
        (Some(_), _) => Ok(()),
        (None, _) => store
            .set(key, &BreakerState::default().encode(), None)
            .map_err(|_| UpdateError::Store),
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// The metric name `sluice.breaker.cluster.<cluster>.<what>`, the cluster name sanitised by
/// [`crate::metrics::sanitize`] so Envoy's stat name and the `stats_tags` regexes stay
/// unambiguous.
pub fn metric_name(cluster: &str, what: &str) -> String {
    format!(
        "sluice.breaker.cluster.{}.{what}",
        crate::metrics::sanitize(cluster)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    fn policy(json: &str) -> Policy {
        let settings: BreakerSettings = serde_json::from_str(json).unwrap();
        Policy::compile(&settings, "test").unwrap()
    }

    fn consecutive(n: u32) -> Policy {
        policy(&format!(
            r#"{{"consecutiveErrors": {n}, "interval": "10s", "baseEjectionTime": "1s",
                "maxEjectionTime": "3s"}}"#
        ))
    }

    fn admit(state: &mut BreakerState, p: &Policy, now: u64) -> Decision {
        let (decision, next) = state.admit(p, now);
        if let Some(next) = next {
            *state = next;
        }
        decision
    }

    fn finish(
        state: &mut BreakerState,
        p: &Policy,
        d: Decision,
        v: Verdict,
        now: u64,
    ) -> Transition {
        let Decision::Admit(ticket) = d else {
            panic!("expected admission, got {d:?}")
        };
        let (t, next) = state.record(p, ticket, v, now);
        if let Some(next) = next {
            *state = next;
        }
        t
    }

    /// One full request: admit then record.
    fn request(
        state: &mut BreakerState,
        p: &Policy,
        v: Verdict,
        now: u64,
    ) -> Result<Transition, Rejection> {
        match admit(state, p, now) {
            Decision::Reject(r) => Err(r),
            d => Ok(finish(state, p, d, v, now)),
        }
    }

    #[test]
    fn opens_after_exactly_n_consecutive_errors() {
        let p = consecutive(3);
        let mut s = BreakerState::default();
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1000),
            Ok(Transition::None)
        );
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1001),
            Ok(Transition::None)
        );
        // A success in between resets the streak.
        assert_eq!(
            request(&mut s, &p, Verdict::Success, 1002),
            Ok(Transition::None)
        );
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1003),
            Ok(Transition::None)
        );
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1004),
            Ok(Transition::None)
        );
        assert!(!s.is_open(1004));
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1005),
            Ok(Transition::Tripped { ejection_ms: 1000 })
        );
        assert!(s.is_open(1005));
        assert_eq!(
            request(&mut s, &p, Verdict::Success, 1500),
            Err(Rejection::Open)
        );
        assert_eq!(s.open_until_ms, 2005);
    }

    #[test]
    fn ignored_outcomes_do_not_break_or_reset_a_streak() {
        let p = consecutive(2);
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 1).unwrap();
        request(&mut s, &p, Verdict::Ignored, 2).unwrap();
        assert_eq!(s.consecutive_errors, 1);
        assert!(matches!(
            request(&mut s, &p, Verdict::Failure, 3),
            Ok(Transition::Tripped { .. })
        ));
    }

    #[test]
    fn half_open_lets_probes_through_and_a_success_closes() {
        let mut p = consecutive(1);
        p.half_open_probes = 2;
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 10_000).unwrap();
        assert_eq!(admit(&mut s, &p, 10_999), Decision::Reject(Rejection::Open));
        assert_eq!(s.effective_phase(11_000), Phase::HalfOpen);
        assert!(!is_unavailable(Some(&s.encode()), 11_000));
        let first = admit(&mut s, &p, 11_000);
        let second = admit(&mut s, &p, 11_001);
        assert!(matches!(first, Decision::Admit(Ticket { probe: true, .. })));
        assert!(matches!(
            second,
            Decision::Admit(Ticket { probe: true, .. })
        ));
        assert_eq!(s.phase, Phase::HalfOpen);
        // Probe budget used up: the third is rejected as open.
        assert_eq!(admit(&mut s, &p, 11_002), Decision::Reject(Rejection::Open));
        assert_eq!(
            finish(&mut s, &p, first, Verdict::Success, 11_050),
            Transition::Closed
        );
        assert_eq!(s.phase, Phase::Closed);
        // The second probe's late failure belongs to a closed breaker: an ordinary error.
        assert!(matches!(
            finish(&mut s, &p, second, Verdict::Failure, 11_060),
            Transition::Tripped { .. }
        ));
    }

    #[test]
    fn failed_probe_reopens_with_backoff_capped_at_max() {
        let p = consecutive(1); // base 1s, max 3s
        let mut s = BreakerState::default();
        let mut now = 0;
        let mut ejections = Vec::new();
        request(&mut s, &p, Verdict::Failure, now).unwrap();
        ejections.push(s.open_until_ms - now);
        for _ in 0..4 {
            now = s.open_until_ms;
            match request(&mut s, &p, Verdict::Failure, now) {
                Ok(Transition::Tripped { ejection_ms }) => ejections.push(ejection_ms),
                other => panic!("probe failure must reopen: {other:?}"),
            }
        }
        assert_eq!(ejections, [1000, 2000, 3000, 3000, 3000]);
        assert_eq!(s.trips, 5);
    }

    #[test]
    fn trips_decay_while_closed() {
        let p = consecutive(1); // interval 10s
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 0).unwrap(); // trip 1, 1s
        request(&mut s, &p, Verdict::Failure, 1000).unwrap(); // probe fails, trip 2, 2s
        assert_eq!(
            request(&mut s, &p, Verdict::Success, 3000),
            Ok(Transition::Closed)
        );
        // 10s healthy forgets one trip: the next trip is the 2nd again (2s), not the 3rd.
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 13_000),
            Ok(Transition::Tripped { ejection_ms: 2000 })
        );
        request(&mut s, &p, Verdict::Success, 15_000).unwrap();
        // 40s healthy forgets everything.
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 55_000),
            Ok(Transition::Tripped { ejection_ms: 1000 })
        );
    }

    #[test]
    fn stale_probe_from_earlier_episode_decides_nothing() {
        let mut p = consecutive(1);
        p.half_open_probes = 2;
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 0).unwrap();
        let old = admit(&mut s, &p, 1000);
        request(&mut s, &p, Verdict::Failure, 1001).unwrap(); // reopens, generation moves on
        let now = s.open_until_ms;
        let fresh = admit(&mut s, &p, now);
        assert!(matches!(fresh, Decision::Admit(Ticket { probe: true, .. })));
        assert_eq!(
            finish(&mut s, &p, old, Verdict::Success, now + 1),
            Transition::None
        );
        assert_eq!(s.phase, Phase::HalfOpen);
        assert_eq!(s.probes_in_flight, 1);
        assert_eq!(
            finish(&mut s, &p, fresh, Verdict::Success, now + 2),
            Transition::Closed
        );
    }

    #[test]
    fn a_probe_past_its_timeout_fails_and_frees_the_breaker() {
        let mut p = consecutive(1);
        p.probe_timeout_ms = 5_000;
        assert_eq!(
            policy(r#"{"consecutiveErrors": 1}"#).probe_timeout_ms,
            10_000,
            "default probeTimeout"
        );
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 10_000).unwrap(); // trip 1: 1s
        let t0 = s.open_until_ms;
        let slow = admit(&mut s, &p, t0);
        assert!(matches!(slow, Decision::Admit(Ticket { probe: true, .. })));
        assert_eq!((s.probe_slots, s.probe_deadline_ms), (1, t0 + 5_000));
        // Within the deadline: the slot is taken, others are rejected and the canary sees the
        // cluster as unavailable, as when open.
        assert_eq!(
            admit(&mut s, &p, t0 + 4_999),
            Decision::Reject(Rejection::Open)
        );
        assert!(is_unavailable(Some(&s.encode()), t0 + 4_999));
        // Past it: reclaimable, so available to the canary; the next admission counts the
        // probe as failed, reopens with the next (doubled) ejection and frees the slot.
        assert!(!is_unavailable(Some(&s.encode()), t0 + 5_000));
        assert_eq!(
            admit(&mut s, &p, t0 + 5_000),
            Decision::Reject(Rejection::ProbeOverrun { ejection_ms: 2_000 })
        );
        assert_eq!(s.phase, Phase::Open);
        assert_eq!(
            (s.trips, s.probes_in_flight, s.probe_deadline_ms),
            (2, 0, 0)
        );
        assert_eq!(s.open_until_ms, t0 + 7_000);
        assert!(is_unavailable(Some(&s.encode()), t0 + 6_999));
        // The slow probe's late success belongs to the earlier episode: it closes nothing.
        assert_eq!(
            finish(&mut s, &p, slow, Verdict::Success, t0 + 6_000),
            Transition::None
        );
        assert_eq!(s.phase, Phase::Open);
        // The next episode probes afresh, and a prompt success closes.
        let probe = admit(&mut s, &p, t0 + 7_000);
        assert!(matches!(probe, Decision::Admit(Ticket { probe: true, .. })));
        assert_eq!(
            finish(&mut s, &p, probe, Verdict::Success, t0 + 7_100),
            Transition::Closed
        );
        assert_eq!((s.probes_in_flight, s.probe_deadline_ms), (0, 0));
    }

    #[test]
    fn the_probe_deadline_is_the_oldest_probes_and_clears_with_the_last() {
        let mut p = consecutive(1);
        p.half_open_probes = 2;
        p.probe_timeout_ms = 5_000;
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 0).unwrap();
        let t0 = s.open_until_ms;
        let first = admit(&mut s, &p, t0);
        // One slot of two taken: still available to the canary.
        assert!(!is_unavailable(Some(&s.encode()), t0 + 1));
        let second = admit(&mut s, &p, t0 + 2_000);
        assert!(matches!(
            second,
            Decision::Admit(Ticket { probe: true, .. })
        ));
        assert_eq!(s.probe_deadline_ms, t0 + 5_000);
        assert!(is_unavailable(Some(&s.encode()), t0 + 2_001));
        assert_eq!(
            finish(&mut s, &p, first, Verdict::Ignored, t0 + 2_500),
            Transition::None
        );
        assert_eq!((s.probes_in_flight, s.probe_deadline_ms), (1, t0 + 5_000));
        assert_eq!(
            finish(&mut s, &p, second, Verdict::Ignored, t0 + 2_600),
            Transition::None
        );
        assert_eq!((s.probes_in_flight, s.probe_deadline_ms), (0, 0));
        // No probe in flight: nothing overran, the next request probes.
        assert!(matches!(
            admit(&mut s, &p, t0 + 60_000),
            Decision::Admit(Ticket { probe: true, .. })
        ));
    }

    #[test]
    fn probe_timeout_is_a_positive_duration() {
        let settings: BreakerSettings =
            serde_json::from_str(r#"{"consecutiveErrors": 1, "probeTimeout": "0s"}"#).unwrap();
        let err = Policy::compile(&settings, "default").unwrap_err();
        assert_eq!(
            err.0,
            r#"default: probeTimeout must be at least 1ms, got "0s""#
        );
    }

    #[test]
    fn ignored_probe_frees_its_slot() {
        let p = consecutive(1);
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 0).unwrap();
        let probe = admit(&mut s, &p, 1000);
        assert_eq!(admit(&mut s, &p, 1001), Decision::Reject(Rejection::Open));
        assert_eq!(
            finish(&mut s, &p, probe, Verdict::Ignored, 1002),
            Transition::None
        );
        assert!(matches!(
            admit(&mut s, &p, 1003),
            Decision::Admit(Ticket { probe: true, .. })
        ));
    }

    #[test]
    fn error_ratio_needs_volume_and_threshold() {
        let p = policy(
            r#"{"errorRatio": {"thresholdPercent": 50, "minRequestVolume": 4},
                "interval": "1s", "baseEjectionTime": "5s"}"#,
        );
        let mut s = BreakerState::default();
        // 3 of 3 failed, but below the minimum volume.
        for t in 0..3 {
            assert_eq!(
                request(&mut s, &p, Verdict::Failure, t),
                Ok(Transition::None)
            );
        }
        // The window expires: counts start over.
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1000),
            Ok(Transition::None)
        );
        assert_eq!((s.window_requests, s.window_errors), (1, 1));
        request(&mut s, &p, Verdict::Success, 1001).unwrap();
        request(&mut s, &p, Verdict::Success, 1002).unwrap();
        // 2 errors of 4 = 50%: trips.
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1003),
            Ok(Transition::Tripped { ejection_ms: 5000 })
        );
    }

    #[test]
    fn concurrency_limit_overflows_and_releases_slots_exactly_once() {
        let p = policy(r#"{"maxConcurrentRequests": 2}"#);
        let mut s = BreakerState::default();
        let a = admit(&mut s, &p, 0);
        let b = admit(&mut s, &p, 0);
        assert_eq!(s.in_flight, 2);
        assert_eq!(admit(&mut s, &p, 0), Decision::Reject(Rejection::Overflow));
        // Whatever the outcome, the slot comes back.
        finish(&mut s, &p, a, Verdict::Ignored, 1);
        assert_eq!(s.in_flight, 1);
        let c = admit(&mut s, &p, 1);
        finish(&mut s, &p, b, Verdict::Failure, 2);
        finish(&mut s, &p, c, Verdict::Success, 2);
        assert_eq!(s.in_flight, 0);
        // Without a limit nothing is counted, so closed-and-healthy admission never writes.
        let q = consecutive(5);
        assert_eq!(BreakerState::default().admit(&q, 0).1, None);
        let t = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        assert_eq!(
            BreakerState::default().record(&q, t, Verdict::Success, 0).1,
            None
        );
    }

    #[test]
    fn record_reads_the_clock_only_when_the_outcome_uses_it() {
        // Counts clock reads; the answer is the same `now` `record` would be given.
        fn recorded(
            state: &BreakerState,
            p: &Policy,
            ticket: Ticket,
            verdict: Verdict,
            now: u64,
        ) -> (usize, (Transition, Option<BreakerState>)) {
            let reads = Cell::new(0);
            let result = state.record_with_clock(p, ticket, verdict, || {
                reads.set(reads.get() + 1);
                now
            });
            assert_eq!(
                result,
                state.record(p, ticket, verdict, now),
                "same as record"
            );
            (reads.get(), result)
        }
        let plain = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        let p = consecutive(2);
        let clean = BreakerState::default();
        // Healthy traffic on a clean closed breaker: no clock, no write.
        assert_eq!(
            recorded(&clean, &p, plain, Verdict::Success, 7),
            (0, (Transition::None, None))
        );
        assert_eq!(recorded(&clean, &p, plain, Verdict::Ignored, 7).0, 0);
        // An error below the threshold counts without the clock; the one that trips reads it once.
        let (reads, (_, one_error)) = recorded(&clean, &p, plain, Verdict::Failure, 7);
        assert_eq!(reads, 0);
        let one_error = one_error.expect("the error is counted");
        let (reads, (trip, _)) = recorded(&one_error, &p, plain, Verdict::Failure, 7);
        assert_eq!(reads, 1);
        assert!(matches!(trip, Transition::Tripped { .. }));
        // A success resetting the error count writes, still without the clock.
        let (reads, (_, reset)) = recorded(&one_error, &p, plain, Verdict::Success, 7);
        assert_eq!((reads, reset.map(|s| s.consecutive_errors)), (0, Some(0)));
        // A probe closing a half-open episode stamps the time.
        let mut half_open = clean;
        half_open.phase = Phase::HalfOpen;
        half_open.probes_in_flight = 1;
        let probe = Ticket {
            probe: true,
            ..plain
        };
        let (reads, (closed, after)) = recorded(&half_open, &p, probe, Verdict::Success, 9);
        assert_eq!((reads, closed), (1, Transition::Closed));
        assert_eq!(after.map(|s| s.closed_since_ms), Some(9));
        // A ratio window rolls on every outcome, so it always reads the clock (once).
        let ratio = policy(
            r#"{"errorRatio": {"thresholdPercent": 50, "minRequestVolume": 4},
                "interval": "10s", "baseEjectionTime": "1s"}"#,
        );
        assert_eq!(recorded(&clean, &ratio, plain, Verdict::Success, 7).0, 1);
        assert_eq!(recorded(&clean, &ratio, plain, Verdict::Failure, 7).0, 1);
    }

    #[test]
    fn admission_and_availability_read_the_clock_only_when_a_deadline_matters() {
        // Every phase, before and after the ejection end and the probe deadline, with and
        // without a concurrency limit: the lazy forms answer as the eager ones and call the
        // clock at most once, never for a closed breaker; availability reads it only for a
        // stored open phase or a half-open one with every probe slot taken.
        let limited = policy(
            r#"{"consecutiveErrors": 2, "maxConcurrentRequests": 1, "interval": "10s",
                "baseEjectionTime": "1s"}"#,
        );
        let policies = [consecutive(2), limited];
        let mut states = Vec::new();
        for phase in [Phase::Closed, Phase::Open, Phase::HalfOpen] {
            for probes_in_flight in [0, 5] {
                for in_flight in [0, 1] {
                    states.push(BreakerState {
                        phase,
                        open_until_ms: 100,
                        probes_in_flight,
                        in_flight,
                        generation: 3,
                        probe_slots: 1,
                        probe_deadline_ms: 100,
                        ..BreakerState::default()
                    });
                }
            }
        }
        for state in &states {
            for p in &policies {
                for now in [99, 100, 101] {
                    let reads = Cell::new(0);
                    let clock = || {
                        reads.set(reads.get() + 1);
                        now
                    };
                    assert_eq!(
                        state.admit_with_clock(p, clock),
                        state.admit(p, now),
                        "{state:?} at {now}"
                    );
                    let open = state.phase == Phase::Open;
                    let admit_reads = reads.replace(0);
                    assert!(admit_reads <= 1, "admit {state:?}");
                    if open {
                        assert_eq!(admit_reads, 1, "admit {state:?}");
                    }
                    if state.phase == Phase::Closed {
                        assert_eq!(admit_reads, 0, "admit {state:?}");
                    }
                    assert_eq!(state.is_open_with_clock(clock), state.is_open(now));
                    assert_eq!(reads.replace(0), usize::from(open), "is_open {state:?}");
                    let full = state.phase == Phase::HalfOpen
                        && state.probes_in_flight >= state.probe_slots;
                    let encoded = state.encode();
                    assert_eq!(
                        is_unavailable_with_clock(Some(&encoded), clock),
                        is_unavailable(Some(&encoded), now)
                    );
                    assert_eq!(reads.replace(0), usize::from(open || full));
                }
            }
        }
        // No value, or one that does not decode: not open, and no clock.
        let reads = Cell::new(0);
        let clock = || {
            reads.set(reads.get() + 1);
            0
        };
        assert!(!is_unavailable_with_clock(None, clock));
        assert!(!is_unavailable_with_clock(Some(b"junk"), clock));
        assert_eq!(reads.get(), 0);
    }

    #[test]
    fn classify_with_code_reads_the_code_only_when_the_flags_leave_it_open() {
        use response_flags as f;
        let all_flags = [
            0,
            f::UPSTREAM_CONNECTION_FAILURE,
            f::UPSTREAM_REMOTE_RESET,
            f::UPSTREAM_REQUEST_TIMEOUT,
            f::DOWNSTREAM_CONNECTION_TERMINATION,
            f::DOWNSTREAM_REMOTE_RESET,
            f::FAULT_INJECTED,
            f::UPSTREAM_OVERFLOW,
            f::NO_ROUTE_FOUND,
            f::DOWNSTREAM_CONNECTION_TERMINATION | f::UPSTREAM_CONNECTION_FAILURE,
        ];
        let policies = [
            consecutive(2),
            policy(
                r#"{"consecutiveErrors": 2, "countAs": ["gateway-error", "reset", "connect-failure"]}"#,
            ),
        ];
        for p in &policies {
            for flags in all_flags {
                for code in [None, Some(0), Some(200), Some(404), Some(500), Some(503)] {
                    let reads = Cell::new(0);
                    let verdict = classify_with_code(
                        flags,
                        || {
                            reads.set(reads.get() + 1);
                            code
                        },
                        p.count_as,
                    );
                    assert_eq!(
                        verdict,
                        classify(code, flags, p.count_as),
                        "{flags:#x} {code:?}"
                    );
                    let decided_by_flags = flags & NOT_THE_UPSTREAMS_FAULT != 0;
                    assert_eq!(reads.get(), usize::from(!decided_by_flags), "{flags:#x}");
                }
            }
        }
    }

    #[test]
    fn an_ignored_outcome_without_slot_or_probe_records_nothing_in_any_state() {
        let limited = policy(
            r#"{"consecutiveErrors": 2, "maxConcurrentRequests": 3,
                "errorRatio": {"thresholdPercent": 50, "minRequestVolume": 4},
                "interval": "10s", "baseEjectionTime": "1s"}"#,
        );
        let plain = Ticket {
            probe: false,
            holds_slot: false,
            generation: 1,
        };
        for phase in [Phase::Closed, Phase::Open, Phase::HalfOpen] {
            let state = BreakerState {
                phase,
                generation: 1,
                consecutive_errors: 1,
                probes_in_flight: 1,
                in_flight: 2,
                window_requests: 3,
                window_errors: 1,
                ..BreakerState::default()
            };
            for p in [&consecutive(2), &limited] {
                assert!(!plain.records_anything(Verdict::Ignored));
                assert_eq!(
                    state.record(p, plain, Verdict::Ignored, 5_000),
                    (Transition::None, None),
                    "{phase:?}"
                );
                // Anything else may change the state, so it must be recorded.
                assert!(plain.records_anything(Verdict::Success));
                assert!(plain.records_anything(Verdict::Failure));
                for ticket in [
                    Ticket {
                        probe: true,
                        ..plain
                    },
                    Ticket {
                        holds_slot: true,
                        ..plain
                    },
                ] {
                    assert!(ticket.records_anything(Verdict::Ignored));
                }
            }
        }
    }

    #[test]
    fn encoding_round_trips_and_rejects_foreign_bytes() {
        let s = BreakerState {
            phase: Phase::HalfOpen,
            trips: 3,
            generation: u32::MAX,
            consecutive_errors: 7,
            window_start_ms: 1_700_000_000_123,
            window_requests: 11,
            window_errors: 5,
            open_until_ms: u64::MAX,
            closed_since_ms: 42,
            probes_in_flight: 1,
            in_flight: 9,
            probe_slots: 2,
            probe_deadline_ms: 1_700_000_010_123,
        };
        let bytes = s.encode();
        assert_eq!(bytes.len(), ENCODED_LEN);
        assert_eq!(BreakerState::decode(&bytes), Some(s));
        let mut other_version = bytes.clone();
        other_version[0] = 1;
        assert_eq!(BreakerState::decode(&other_version), None);
        let mut bad_phase = bytes.clone();
        bad_phase[1] = 9;
        assert_eq!(BreakerState::decode(&bad_phase), None);
        assert_eq!(BreakerState::decode(&bytes[..ENCODED_LEN - 1]), None);
        assert_eq!(BreakerState::decode(b""), None);
        assert!(!is_unavailable(None, 0));
        assert!(!is_unavailable(Some(b"garbage"), 0));
    }

    #[test]
    fn classification_follows_envoy_flags() {
        use response_flags as f;
        let all: OutcomeSet = [Outcome::Status5xx].into_iter().collect();
        let gw: OutcomeSet = [Outcome::GatewayError].into_iter().collect();
        let connect: OutcomeSet = [Outcome::ConnectFailure].into_iter().collect();
        let timeout: OutcomeSet = [Outcome::Timeout].into_iter().collect();
        let reset: OutcomeSet = [Outcome::Reset].into_iter().collect();
        assert_eq!(classify(Some(200), 0, all), Verdict::Success);
        assert_eq!(classify(Some(404), 0, all), Verdict::Success);
        assert_eq!(classify(Some(500), 0, all), Verdict::Failure);
        assert_eq!(classify(Some(500), 0, gw), Verdict::Success);
        assert_eq!(classify(Some(503), 0, gw), Verdict::Failure);
        assert_eq!(
            classify(Some(503), f::UPSTREAM_CONNECTION_FAILURE, connect),
            Verdict::Failure
        );
        assert_eq!(classify(Some(503), 0, connect), Verdict::Success);
        assert_eq!(
            classify(Some(504), f::UPSTREAM_REQUEST_TIMEOUT, timeout),
            Verdict::Failure
        );
        assert_eq!(
            classify(Some(503), f::UPSTREAM_REMOTE_RESET, reset),
            Verdict::Failure
        );
        assert_eq!(
            classify(Some(503), f::UPSTREAM_CONNECTION_TERMINATION, reset),
            Verdict::Failure
        );
        // Not the upstream's fault, even with a 5xx code.
        assert_eq!(
            classify(Some(503), f::FAULT_INJECTED, all),
            Verdict::Ignored
        );
        assert_eq!(
            classify(Some(404), f::NO_ROUTE_FOUND, all),
            Verdict::Ignored
        );
        assert_eq!(
            classify(Some(503), f::UPSTREAM_OVERFLOW, all),
            Verdict::Ignored
        );
        assert_eq!(
            classify(Some(0), f::DOWNSTREAM_CONNECTION_TERMINATION, all),
            Verdict::Ignored
        );
        assert_eq!(classify(None, 0, all), Verdict::Ignored);
        assert_eq!(classify(Some(0), 0, all), Verdict::Ignored);
    }

    #[test]
    fn config_parses_with_defaults_and_refuses_mistakes() {
        let cfg = BreakerConfig::from_json(
            br#"{"breakers": [{"cluster": "a", "consecutiveErrors": 5,
                 "countAs": ["gateway-error", "connect-failure", "reset", "timeout", "5xx"]}],
                 "default": {"maxConcurrentRequests": 100}}"#,
        )
        .unwrap();
        let compiled = cfg.compile().unwrap();
        assert!(!compiled.after_router);
        assert_eq!(compiled.cluster_header, "x-sluice-cluster");
        let a = compiled.policy_for("a").unwrap();
        assert_eq!(
            (a.interval_ms, a.base_ejection_ms, a.max_ejection_ms),
            (10_000, 30_000, 300_000)
        );
        assert_eq!(a.half_open_probes, 1);
        assert!(a.count_as.contains(Outcome::Timeout));
        assert_eq!(
            compiled
                .policy_for("other")
                .unwrap()
                .max_concurrent_requests,
            Some(100)
        );
        // Round trip through serde, as the builder emits it.
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(BreakerConfig::from_json(json.as_bytes()).unwrap(), cfg);

        for (bad, needle) in [
            (
                r#"{"breakers": [{"cluster": "a", "consecutiveErrors": 1, "typo": 1}]}"#,
                "unknown field `typo`",
            ),
            (r#"{"breakers": [{"cluster": "a"}]}"#, "at least one of"),
            (
                r#"{"breakers": [{"cluster": "a", "consecutiveErrors": 0}]}"#,
                "consecutiveErrors must be at least 1",
            ),
            (
                r#"{"breakers": [{"cluster": "a", "consecutiveErrors": 1, "interval": "5"}]}"#,
                "interval: invalid duration",
            ),
            (
                r#"{"breakers": [{"cluster": "a", "consecutiveErrors": 1, "baseEjectionTime": "10s", "maxEjectionTime": "1s"}]}"#,
                "maxEjectionTime",
            ),
            (
                r#"{"breakers": [{"cluster": "a", "consecutiveErrors": 1, "halfOpenProbes": 0}]}"#,
                "halfOpenProbes",
            ),
            (
                r#"{"breakers": [{"cluster": "a", "consecutiveErrors": 1, "countAs": ["4xx"]}]}"#,
                "unknown variant `4xx`",
            ),
            (
                r#"{"breakers": [{"cluster": "a", "errorRatio": {"thresholdPercent": 0}}]}"#,
                "thresholdPercent",
            ),
            (
                r#"{"breakers": [{"cluster": "a", "consecutiveErrors": 1}, {"cluster": "a", "consecutiveErrors": 2}]}"#,
                "listed twice",
            ),
            (r#"{"breakers": []}"#, "no breakers"),
            (
                r#"{"clusterHeader": "x-c", "default": {"consecutiveErrors": 1}}"#,
                "only read when afterRouter",
            ),
            (
                r#"{"afterRouter": true, "clusterHeader": "X-C", "default": {"consecutiveErrors": 1}}"#,
                "lower-case",
            ),
        ] {
            let err = BreakerConfig::from_json(bad.as_bytes())
                .and_then(|c| c.compile())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    /// A store with Envoy's semantics (global CAS counter, `None` creates or overwrites) that
    /// can let a rival writer sneak in between a get and the next set.
    #[derive(Default)]
    struct FakeStore {
        map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: Cell<u32>,
        /// Rival writes to perform right after the next gets, one per get.
        rivals: RefCell<Vec<BreakerState>>,
        gets: Cell<u32>,
        sets: Cell<u32>,
    }

    impl FakeStore {
        fn put(&self, key: &str, value: Vec<u8>) {
            self.next_cas.set(self.next_cas.get() + 1);
            self.map
                .borrow_mut()
                .insert(key.into(), (value, self.next_cas.get()));
        }
    }

    impl SharedStore for FakeStore {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.gets.set(self.gets.get() + 1);
            let out = match self.map.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            };
            if let Some(rival) = self.rivals.borrow_mut().pop() {
                self.put(key, rival.encode());
            }
            out
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.sets.set(self.sets.get() + 1);
            let current = self.map.borrow().get(key).map(|(_, c)| *c);
            if let (Some(want), Some(have)) = (cas, current)
                && want != have
            {
                return Err(StoreError::CasMismatch);
            }
            self.put(key, value.to_vec());
            Ok(())
        }
    }

    #[test]
    fn update_retries_on_cas_conflict_without_losing_the_rivals_write() {
        let store = FakeStore::default();
        let key = shared_data_key("c");
        ensure_exists(&store, &key).unwrap();
        store.sets.set(0);
        let p = consecutive(3);
        // Two rivals each record one failure between our read and our write.
        let rival1 = BreakerState {
            consecutive_errors: 1,
            ..Default::default()
        };
        let rival2 = BreakerState {
            consecutive_errors: 2,
            ..Default::default()
        };
        store.rivals.borrow_mut().extend([rival2, rival1]);
        let ticket = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        let (transition, state) =
            update(&store, &key, |s| s.record(&p, ticket, Verdict::Failure, 5)).unwrap();
        // Our failure lands on top of both rivals': the third consecutive error trips.
        assert!(matches!(transition, Transition::Tripped { .. }));
        assert_eq!(state.phase, Phase::Open);
        assert_eq!(store.sets.get(), 3, "two conflicts, then success");
        let (stored, _) = store.get(&key);
        assert_eq!(BreakerState::decode(&stored.unwrap()), Some(state));
    }

    #[test]
    fn update_from_a_snapshot_reads_nothing_more_and_stays_exact() {
        let store = FakeStore::default();
        let key = shared_data_key("c");
        ensure_exists(&store, &key).unwrap();
        let p = consecutive(2);
        let ticket = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        // A decision that writes nothing is made on the snapshot alone.
        let snapshot = store.get(&key);
        store.gets.set(0);
        let (_, state) = update_from(&store, &key, Some(snapshot), |s| {
            s.record(&p, ticket, Verdict::Success, 5)
        })
        .unwrap();
        assert_eq!(store.gets.get(), 0, "the snapshot stands in for the read");
        assert_eq!(state, BreakerState::default());
        // A rival writes after the snapshot: our write fails its CAS, and the retry re-reads,
        // so the rival's failure and ours both count (the second one trips the breaker).
        let snapshot = store.get(&key);
        let rival = BreakerState {
            consecutive_errors: 1,
            ..Default::default()
        };
        store.put(&key, rival.encode());
        store.gets.set(0);
        store.sets.set(0);
        let (transition, state) = update_from(&store, &key, Some(snapshot), |s| {
            s.record(&p, ticket, Verdict::Failure, 5)
        })
        .unwrap();
        assert!(
            matches!(transition, Transition::Tripped { .. }),
            "{state:?}"
        );
        assert_eq!((store.gets.get(), store.sets.get()), (1, 2));
    }

    #[test]
    fn update_gives_up_when_always_contended_and_skips_writes_without_change() {
        let store = FakeStore::default();
        let key = shared_data_key("c");
        ensure_exists(&store, &key).unwrap();
        let p = consecutive(3);
        store
            .rivals
            .borrow_mut()
            .extend((0..MAX_CAS_ATTEMPTS).map(|i| BreakerState {
                window_requests: i,
                ..Default::default()
            }));
        let ticket = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        let result = update(&store, &key, |s| s.record(&p, ticket, Verdict::Failure, 5));
        assert_eq!(result, Err(UpdateError::Contended));
        assert_eq!(store.sets.get(), MAX_CAS_ATTEMPTS + 1); // + ensure_exists

        let before = store.sets.get();
        let (decision, _) = update(&store, &key, |s| s.admit(&p, 6)).unwrap();
        assert!(matches!(decision, Decision::Admit(_)));
        assert_eq!(
            store.sets.get(),
            before,
            "closed admission without a limit writes nothing"
        );
    }

    #[test]
    fn ensure_exists_keeps_existing_state_and_update_replaces_undecodable_values() {
        let store = FakeStore::default();
        let key = shared_data_key("c");
        let open = BreakerState {
            phase: Phase::Open,
            open_until_ms: 99,
            ..Default::default()
        };
        store.put(&key, open.encode());
        ensure_exists(&store, &key).unwrap();
        assert!(is_unavailable(store.get(&key).0.as_deref(), 50));
        store.put(&key, b"\x07future".to_vec());
        let p = consecutive(1);
        let ticket = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        let (t, _) = update(&store, &key, |s| s.record(&p, ticket, Verdict::Failure, 1)).unwrap();
        assert!(matches!(t, Transition::Tripped { .. }));
        assert!(is_unavailable(store.get(&key).0.as_deref(), 2));
    }

    #[test]
    fn istio_cluster_names_group_by_port_and_host() {
        assert_eq!(
            istio_port_host("outbound|9080|v1|reviews.default.svc.cluster.local"),
            Some(("9080", "reviews.default.svc.cluster.local"))
        );
        assert_eq!(istio_port_host("outbound|80||web"), Some(("80", "web")));
        for bad in [
            "reviews-v1",
            "inbound|9080|v1|reviews",
            "outbound|http|v1|reviews",
            "outbound||v1|reviews",
            "outbound|9080|v1|",
            "outbound|9080|v1",
            "outbound|9080|v1|reviews|extra",
        ] {
            assert_eq!(istio_port_host(bad), None, "{bad}");
        }
        let listed = [
            "outbound|9080|v1|reviews",
            "outbound|9080|v2|reviews",
            "outbound|9081|v1|reviews",
            "outbound|9080|v1|ratings",
            "outbound|9080||reviews",
            "plain",
        ];
        assert_eq!(
            host_siblings("outbound|9080|v1|reviews", listed.into_iter()),
            ["outbound|9080|v2|reviews", "outbound|9080||reviews"]
        );
        assert_eq!(
            host_siblings("outbound|9081|v1|reviews", listed.into_iter()),
            Vec::<&str>::new()
        );
        assert_eq!(
            host_siblings("plain", listed.into_iter()),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn ejection_cap_is_envoys_arithmetic() {
        // (open already, members, maxEjectionPercent, allowed): 100 x (open + 1) / members
        // must not exceed the cap; no floor of one ejection (Envoy's always_eject_one_host is
        // off by default).
        for (open, members, cap, allowed) in [
            (0, 2, 50, true),
            (1, 2, 50, false),
            (0, 2, 49, false),
            (0, 1, 100, true),
            (0, 1, 99, false),
            (0, 10, 10, true),
            (1, 10, 10, false),
            (0, 3, 34, true),
            (0, 3, 33, false),
            (1, 3, 67, true),
            (1, 3, 66, false),
            (2, 3, 100, true),
            (0, 4, 0, false),
            (9, 10, 100, true),
        ] {
            assert_eq!(
                ejection_allowed(open, members, cap),
                allowed,
                "{open} open of {members}, cap {cap}"
            );
        }
    }

    #[test]
    fn a_capped_trip_is_skipped_and_asks_only_when_a_closed_breaker_would_open() {
        let capped = policy(
            r#"{"consecutiveErrors": 2, "maxEjectionPercent": 50, "baseEjectionTime": "1s"}"#,
        );
        assert_eq!(capped.max_ejection_percent, 50);
        assert_eq!(consecutive(2).max_ejection_percent, 100);
        let plain = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        let asked = Cell::new(0);
        let refuse = || {
            asked.set(asked.get() + 1);
            false
        };
        let closed = BreakerState::default();
        // Below the threshold, and on success: never asked.
        let (t, one) = closed.record_capped(&capped, plain, Verdict::Failure, || 5, refuse);
        assert_eq!((t, asked.get()), (Transition::None, 0));
        let one = one.unwrap();
        let (t, _) = one.record_capped(&capped, plain, Verdict::Success, || 5, refuse);
        assert_eq!((t, asked.get()), (Transition::None, 0));
        // At the threshold: asked once; refused, it stays closed and counts from zero.
        let (t, next) = one.record_capped(&capped, plain, Verdict::Failure, || 7, refuse);
        assert_eq!((t, asked.get()), (Transition::TripSkipped, 1));
        let next = next.unwrap();
        assert_eq!(next.phase, Phase::Closed);
        assert_eq!(
            (next.consecutive_errors, next.trips, next.generation),
            (0, 0, 0)
        );
        // Allowed: it trips as usual.
        let (t, next) = one.record_capped(&capped, plain, Verdict::Failure, || 7, || true);
        assert!(matches!(t, Transition::Tripped { ejection_ms: 1_000 }));
        assert_eq!(next.unwrap().phase, Phase::Open);
        // Without a cap: never asked.
        let (t, _) = one.record_capped(&consecutive(2), plain, Verdict::Failure, || 7, refuse);
        assert!(matches!(t, Transition::Tripped { .. }));
        assert_eq!(asked.get(), 1);
        // A half-open probe failing reopens without asking: that breaker already counts.
        let half_open = BreakerState {
            phase: Phase::HalfOpen,
            probes_in_flight: 1,
            generation: 3,
            ..BreakerState::default()
        };
        let probe = Ticket {
            probe: true,
            holds_slot: false,
            generation: 3,
        };
        let (t, _) = half_open.record_capped(&capped, probe, Verdict::Failure, || 9, refuse);
        assert!(matches!(t, Transition::Tripped { .. }));
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn capped_config_lists_siblings_and_refuses_what_cannot_be_grouped() {
        let cfg = BreakerConfig::from_json(
            br#"{"breakers": [
                 {"cluster": "outbound|9080|v1|reviews", "consecutiveErrors": 2, "maxEjectionPercent": 50},
                 {"cluster": "outbound|9080|v2|reviews", "consecutiveErrors": 2, "maxEjectionPercent": 50},
                 {"cluster": "outbound|9080|v1|ratings", "consecutiveErrors": 2}]}"#,
        )
        .unwrap()
        .compile()
        .unwrap();
        assert_eq!(
            cfg.siblings("outbound|9080|v1|reviews"),
            ["outbound|9080|v2|reviews"]
        );
        // No cap, or not listed: nothing to read.
        assert!(cfg.siblings("outbound|9080|v1|ratings").is_empty());
        assert!(cfg.siblings("outbound|9080|v3|reviews").is_empty());
        for (bad, needle) in [
            (
                r#"{"breakers": [{"cluster": "a", "consecutiveErrors": 1, "maxEjectionPercent": 50}]}"#,
                "needs an Istio cluster name",
            ),
            (
                r#"{"breakers": [{"cluster": "outbound|1|a|b", "consecutiveErrors": 1, "maxEjectionPercent": 101}]}"#,
                "maxEjectionPercent must be within 0..=100",
            ),
            (
                r#"{"default": {"consecutiveErrors": 1, "maxEjectionPercent": 50}}"#,
                "only for listed breakers",
            ),
        ] {
            let err = BreakerConfig::from_json(bad.as_bytes())
                .and_then(|c| c.compile())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn metric_names_are_sanitised() {
        assert_eq!(
            metric_name("outbound|80|v1|reviews.default.svc", "trips"),
            "sluice.breaker.cluster.outbound_80_v1_reviews_default_svc.trips"
        );
        assert_eq!(shared_data_key("a.b"), "sluice.breaker.a.b");
    }
}
