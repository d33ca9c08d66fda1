//! The breaker settings as the plugin config spells them ([`BreakerConfig`]), and their
//! validation into [`CompiledBreakers`]: one [`Policy`] per cluster, durations in
//! milliseconds, plus the host grouping that `maxEjectionPercent` counts.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::duration;
use crate::unique::FirstSeen;

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

    /// The bitmask (stable: part of a guard's config fingerprint).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether the set holds `outcome`.
    pub fn contains(self, outcome: Outcome) -> bool {
        self.0 & Self::bit(outcome) != 0
    }

    /// Whether the sets share an outcome.
    pub fn intersects(self, other: OutcomeSet) -> bool {
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
    pub(super) fn tracks_window(&self) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
