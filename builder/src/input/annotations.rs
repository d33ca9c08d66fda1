//! sluice's own input: the `sluice.dev/*` annotations (their values are YAML), the seeds'
//! legacy `trafficPolicy.circuitBreaker` block, and Istio's `fault` read as the fault filter's
//! rule.
//!
//! Stock Istio tooling accepts any annotation, so settings Istio has no field for live in
//! annotations whose values are YAML (a block scalar):
//!
//! - `sluice.dev/canary` on a VirtualService: per http route (its `name`, or its index in
//!   `http[]` as a string) `sticky`, `schedule`, `failover` of the canary split of that rule.
//! - `sluice.dev/fault` on a VirtualService: the fault filter's extras (`maxActiveFaults`,
//!   `debugHeader`, `headerFaults`).
//! - `sluice.dev/debug` on a VirtualService: the header (and the secret file and/or trusted
//!   networks) that gets a request an `x-sluice-explain` response header from the suite module.
//! - `sluice.dev/breaker` on a DestinationRule: the breaker of every cluster of the host, with
//!   per-subset overrides under `subsets:` (merged field by field, as Istio merges a subset's
//!   trafficPolicy over the host's).
//! - `sluice.dev/health-check` on a ServiceEntry or DestinationRule: Envoy's active HTTP health
//!   checking of the host's endpoints.
//! - `sluice.dev/probe` on a ServiceEntry or WorkloadEntry: central health checking by
//!   `sluice serve` (Istio's WorkloadGroup `probe` shape, see [`crate::input::probe`]).
//! - `sluice.dev/draining: "true"` on a WorkloadEntry: the workload is leaving; proxies get its
//!   endpoints as EDS `DRAINING` (no new requests, those in flight finish). `sluice register`
//!   writes it before it removes a VM's entry.
//!
//! This module only reads; [`crate::check::settings`] reports problems with positions, and the
//! model ([`crate::model::settings`]) resolves the values of valid inputs.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_core::breaker::{BreakerSettings, ErrorRatio, Outcome};
use sluice_core::canary::{Guard, Schedule, Sticky};
use sluice_core::fault::config::{Abort, Delay, FaultRule, HeaderFaults, Percent as CorePercent};

use crate::input::istio::{CircuitBreaker, HttpFaultInjection, VirtualServiceSpec};
use crate::input::parse::Resource;
use crate::input::yaml::{self, Node, Pos, Value};

/// Annotation of a VirtualService: canary settings per http route.
pub const CANARY_ANNOTATION: &str = "sluice.dev/canary";
/// Annotation of a VirtualService: extras of the fault filter.
pub const FAULT_ANNOTATION: &str = "sluice.dev/fault";
/// Annotation of a VirtualService: who may ask the suite module for an `x-sluice-explain`
/// response header ([`DebugSettings`]); it applies to every rule of the listeners the
/// VirtualService's rules are on.
pub const DEBUG_ANNOTATION: &str = "sluice.dev/debug";
/// Annotation of a DestinationRule: the sluice breaker of the host and its subsets.
pub const BREAKER_ANNOTATION: &str = "sluice.dev/breaker";
/// Annotation of a ServiceEntry (all its endpoints) or a WorkloadEntry (that workload): the
/// probe `sluice serve` runs on each endpoint, in the shape of Istio's WorkloadGroup
/// `spec.probe`, whose result every proxy gets as EDS health status.
pub const PROBE_ANNOTATION: &str = "sluice.dev/probe";
/// Annotation of a WorkloadEntry, `"true"` or `"false"`: whether the workload is draining
/// (leaving): its endpoints go to every proxy as EDS `health_status: DRAINING`, so Envoy sends
/// them no new requests while those in flight finish, whatever their probes say.
pub const DRAINING_ANNOTATION: &str = "sluice.dev/draining";

/// Whether `r` carries `sluice.dev/draining: "true"` (any other value is not draining; the
/// checks report values other than `"true"` and `"false"`).
pub fn is_draining(r: &Resource) -> bool {
    r.metadata
        .annotations
        .get(DRAINING_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// The breaker outcomes `countAs` accepts, for hints.
pub(crate) const OUTCOMES: [&str; 5] = [
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "timeout",
];

/// `sluice.dev/canary` entry of one http route.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryRoute {
    /// Pins each client to one destination (the canary filter's `sticky`).
    pub sticky: Option<Sticky>,
    /// Progressive rollout: one weight per destination of the route, in route order.
    pub schedule: Option<Schedule>,
    /// Move an open-breaker destination's share to the healthy ones (default true).
    pub failover: Option<bool>,
    /// Halt the canary (the route's last destination) when it fails measurably more often
    /// than the others (the canary filter's `guard`, without `canary`).
    pub guard: Option<Guard>,
}

/// `sluice.dev/fault`: fault filter settings Istio's `fault` has no field for.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultExtras {
    /// Cap on faults in progress per Envoy worker.
    pub max_active_faults: Option<u32>,
    /// Tell clients which fault fired (`x-sluice-fault`).
    pub debug_header: Option<bool>,
    /// Envoy's `x-envoy-fault-*` request headers, honoured for trusted clients.
    pub header_faults: Option<HeaderFaults>,
}

/// `sluice.dev/debug`: the suite's `debug` section as users write it. The secret is never in
/// the YAML: `secretFile` names a file (relative to the YAML file's folder) whose content,
/// without its trailing whitespace, is the secret. Every field is optional here (the checks
/// report a missing `header`).
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DebugSettings {
    /// The request header that asks for an explanation, e.g. `x-sluice-debug`.
    pub header: Option<String>,
    /// The file holding the secret the header must carry. Once the model is built, the path
    /// is resolved (relative to the folder of the YAML file that carries the annotation).
    pub secret_file: Option<String>,
    /// Client networks that may ask.
    #[serde(default)]
    pub trusted_cidrs: Vec<String>,
    /// The secret itself, read from `secret_file` when the model is built (empty: none). Never
    /// in the YAML and never serialised (no model dump shows it): only the suite's config
    /// carries it.
    #[serde(skip)]
    pub secret: String,
}

/// `secret_file` of a `sluice.dev/debug` annotation in the YAML file `yaml_file`: the path it
/// names, relative to that file's folder unless absolute.
pub fn debug_secret_path(yaml_file: &str, secret_file: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(secret_file);
    if path.is_absolute() {
        return path.to_owned();
    }
    std::path::Path::new(yaml_file)
        .parent()
        .unwrap_or(std::path::Path::new(""))
        .join(path)
}

/// The secret in the file at `path`, without trailing whitespace (a final newline). The
/// error names the file, never its content.
pub fn read_debug_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    Ok(text.trim_end().to_owned())
}

/// `sluice.dev/breaker` fields (host level, or one subset's overrides): every field optional,
/// so a subset override says only what differs.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BreakerFields {
    /// Open after this many consecutive errors.
    pub consecutive_errors: Option<u32>,
    /// Open when the share of errors in one interval reaches a threshold.
    pub error_ratio: Option<ErrorRatio>,
    /// Error-ratio window; a closed breaker forgets one trip per interval.
    pub interval: Option<String>,
    /// Ejection time of the first trip.
    pub base_ejection_time: Option<String>,
    /// Cap of the backed-off ejection time.
    pub max_ejection_time: Option<String>,
    /// Requests let through at once while half-open.
    pub half_open_probes: Option<u32>,
    /// How long a half-open probe may take before it counts as failed.
    pub probe_timeout: Option<String>,
    /// Which outcomes are errors (`5xx`, `gateway-error`, `connect-failure`, `reset`, `timeout`).
    pub count_as: Option<Vec<String>>,
    /// Reject while this many requests to the cluster are in flight.
    pub max_concurrent_requests: Option<u32>,
    /// Host level only: cap (0-100) on the share of the host's clusters (same port) whose
    /// breakers may be open at once, as Envoy's `maxEjectionPercent`. Default: no cap.
    pub max_ejection_percent: Option<u32>,
}

impl BreakerFields {
    /// `over`'s fields where set, else `self`'s.
    pub(crate) fn merged(&self, over: &BreakerFields) -> BreakerFields {
        BreakerFields {
            consecutive_errors: over.consecutive_errors.or(self.consecutive_errors),
            error_ratio: over
                .error_ratio
                .clone()
                .or_else(|| self.error_ratio.clone()),
            interval: over.interval.clone().or_else(|| self.interval.clone()),
            base_ejection_time: over
                .base_ejection_time
                .clone()
                .or_else(|| self.base_ejection_time.clone()),
            max_ejection_time: over
                .max_ejection_time
                .clone()
                .or_else(|| self.max_ejection_time.clone()),
            half_open_probes: over.half_open_probes.or(self.half_open_probes),
            probe_timeout: over
                .probe_timeout
                .clone()
                .or_else(|| self.probe_timeout.clone()),
            count_as: over.count_as.clone().or_else(|| self.count_as.clone()),
            max_concurrent_requests: over
                .max_concurrent_requests
                .or(self.max_concurrent_requests),
            // Host level only (a subset's is refused by `check`): one cap for the host.
            max_ejection_percent: self.max_ejection_percent,
        }
    }

    /// The filter's settings, defaults filled in. Unknown `countAs` names are dropped here;
    /// [`crate::check::settings::check`] reports them.
    pub(crate) fn settings(&self) -> BreakerSettings {
        let defaults = BreakerSettings::default();
        BreakerSettings {
            consecutive_errors: self.consecutive_errors,
            error_ratio: self.error_ratio.clone(),
            interval: self.interval.clone().unwrap_or(defaults.interval),
            base_ejection_time: self
                .base_ejection_time
                .clone()
                .unwrap_or(defaults.base_ejection_time),
            max_ejection_time: self
                .max_ejection_time
                .clone()
                .unwrap_or(defaults.max_ejection_time),
            half_open_probes: self.half_open_probes.unwrap_or(defaults.half_open_probes),
            probe_timeout: self.probe_timeout.clone().unwrap_or(defaults.probe_timeout),
            count_as: match &self.count_as {
                Some(names) => names.iter().filter_map(|n| outcome(n)).collect(),
                None => defaults.count_as,
            },
            max_concurrent_requests: self.max_concurrent_requests,
            max_ejection_percent: self.max_ejection_percent,
        }
    }
}

/// The breaker outcome `name` (`countAs`) names, if it is one.
pub(crate) fn outcome(name: &str) -> Option<Outcome> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// The seeds' `circuitBreaker` block as breaker settings (`None` when it sets no threshold).
pub fn legacy_breaker(cb: &CircuitBreaker) -> Option<BreakerSettings> {
    let consecutive = cb
        .consecutive5xx_errors
        .or(cb.consecutive_errors)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)?;
    let defaults = BreakerSettings::default();
    let base = cb
        .base_ejection_time
        .clone()
        .unwrap_or(defaults.base_ejection_time);
    // The filter wants max >= base; Envoy's default cap (300s) unless the base is longer.
    let max = match (
        sluice_core::duration::parse(&base),
        sluice_core::duration::parse(&defaults.max_ejection_time),
    ) {
        (Ok(b), Ok(m)) if b > m => base.clone(),
        _ => defaults.max_ejection_time,
    };
    Some(BreakerSettings {
        consecutive_errors: Some(consecutive),
        interval: cb.interval.clone().unwrap_or(defaults.interval),
        base_ejection_time: base,
        max_ejection_time: max,
        ..defaults
    })
}

/// Istio's `fault` of rule `rule` as the fault filter's rule. Values that cannot be represented
/// (a negative status) become ones the filter refuses, so [`crate::check::settings::check`] reports them.
pub fn fault_rule(rule: &str, fault: &HttpFaultInjection) -> FaultRule {
    let percent = |p: &Option<crate::input::istio::Percent>| {
        p.as_ref().map(|p| CorePercent {
            value: p.value.unwrap_or(0.0),
        })
    };
    FaultRule {
        rule: rule.to_owned(),
        matches: Vec::new(),
        delay: fault.delay.as_ref().map(|d| Delay {
            fixed_delay: d.fixed_delay.clone().unwrap_or_default(),
            percentage: percent(&d.percentage),
            percent: d.percent.map(|p| u32::try_from(p).unwrap_or(u32::MAX)),
        }),
        abort: fault.abort.as_ref().map(|a| Abort {
            http_status: a.http_status.map(|s| u32::try_from(s).unwrap_or(u32::MAX)),
            grpc_status: a.grpc_status.clone(),
            percentage: percent(&a.percentage),
        }),
    }
}

/// Route `key` of a `sluice.dev/canary` annotation: an http route's `name`, or its index.
pub(crate) fn route_index(vs: &VirtualServiceSpec, key: &str) -> Option<usize> {
    vs.http
        .iter()
        .position(|h| h.name.as_deref() == Some(key))
        .or_else(|| key.parse::<usize>().ok().filter(|i| *i < vs.http.len()))
}

/// The YAML-valued `sluice.dev/*` annotations of one resource, parsed once when the resource
/// is read: the checks report their errors with positions, the model reads their values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SluiceAnnotations {
    /// Per annotation key present ([`CANARY_ANNOTATION`], [`FAULT_ANNOTATION`],
    /// [`BREAKER_ANNOTATION`], [`PROBE_ANNOTATION`]): its value as a YAML tree, or the YAML
    /// error.
    pub trees: BTreeMap<&'static str, Result<Node, yaml::YamlError>>,
    /// [`HEALTH_CHECK_ANNOTATION`], when present: the settings, or what is wrong with them.
    pub health_check: Option<Result<HealthCheck, String>>,
}

impl SluiceAnnotations {
    /// Parses the sluice annotations among `annotations`.
    pub fn read(annotations: &BTreeMap<String, String>) -> Self {
        let trees = [
            CANARY_ANNOTATION,
            FAULT_ANNOTATION,
            DEBUG_ANNOTATION,
            BREAKER_ANNOTATION,
            PROBE_ANNOTATION,
        ]
        .into_iter()
        .filter_map(|key| Some((key, yaml_tree(annotations.get(key)?))))
        .collect();
        Self {
            trees,
            health_check: annotations
                .get(HEALTH_CHECK_ANNOTATION)
                .map(|text| parse_health_check(text)),
        }
    }
}

/// An annotation's value parsed as YAML (an empty value is an empty mapping).
fn yaml_tree(text: &str) -> Result<Node, yaml::YamlError> {
    yaml::parse_documents(text).map(|docs| {
        docs.into_iter().next().map_or(
            Node {
                pos: Pos { line: 1, col: 1 },
                value: Value::Map(Vec::new()),
            },
            |d| d.root,
        )
    })
}

/// The annotation's value parsed as YAML (`None`: absent), as read with the resource.
pub(crate) fn annotation_tree<'r>(
    r: &'r Resource,
    key: &str,
) -> Option<&'r Result<Node, yaml::YamlError>> {
    r.annotations.trees.get(key)
}

/// The `sluice.dev/probe` annotation of `r` as a probe input (`None`: absent, or invalid, which
/// [`crate::check::settings::check`] reports with its position).
pub fn probe_input(r: &Resource) -> Option<crate::input::probe::ProbeInput> {
    let tree = annotation_tree(r, PROBE_ANNOTATION)?.as_ref().ok()?;
    serde_json::from_value(tree.to_json()).ok()
}

/// Host-level fields and per-subset overrides of a breaker annotation tree.
pub(crate) fn breaker_fields(
    tree: &Node,
) -> Option<(BreakerFields, BTreeMap<String, BreakerFields>)> {
    let Value::Map(entries) = &tree.value else {
        return None;
    };
    let host_json = serde_json::Value::Object(
        entries
            .iter()
            .filter(|(k, _, _)| k != "subsets")
            .map(|(k, _, v)| (k.clone(), v.to_json()))
            .collect(),
    );
    let host = serde_json::from_value(host_json).ok()?;
    let subsets = match tree.get("subsets") {
        Some(node) => serde_json::from_value(node.to_json()).ok()?,
        None => BTreeMap::new(),
    };
    Some((host, subsets))
}

// ---------------------------------------------------------------------------------------------
// Checks, with positions
// ---------------------------------------------------------------------------------------------

/// The annotation (on a ServiceEntry or DestinationRule) that turns on Envoy's active HTTP
/// health checking of the host's endpoints; its value is YAML:
/// `{path: /healthz, interval: 10s, timeout: 1s, unhealthyThreshold: 3, healthyThreshold: 1}`
/// (those are the defaults; only `path` is required).
pub const HEALTH_CHECK_ANNOTATION: &str = "sluice.dev/health-check";

/// The `sluice.dev/health-check` settings.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Path probed with GET; a 200 is healthy.
    pub path: String,
    /// Time between probes (default 10s).
    pub interval: Option<String>,
    /// Probe timeout (default 1s).
    pub timeout: Option<String>,
    /// Failed probes before a healthy endpoint is taken out (default 3).
    pub unhealthy_threshold: Option<u32>,
    /// Passed probes before an unhealthy endpoint is put back (default 1).
    pub healthy_threshold: Option<u32>,
}

/// Reads a `sluice.dev/health-check` value; `Err` says what is wrong (the checks report it, the
/// model skips it).
fn parse_health_check(text: &str) -> Result<HealthCheck, String> {
    let docs =
        yaml::parse_documents(text).map_err(|e| format!("line {}: {}", e.pos.line, e.message))?;
    let json = docs
        .into_iter()
        .next()
        .map_or(serde_json::Value::Null, |d| d.root.to_json());
    let hc: HealthCheck = serde_json::from_value(json).map_err(|e| e.to_string())?;
    for (field, value) in [("interval", &hc.interval), ("timeout", &hc.timeout)] {
        if let Some(v) = value
            && sluice_core::duration::parse(v).is_err()
        {
            return Err(format!("{field}: invalid duration {v:?}"));
        }
    }
    if !hc.path.starts_with('/') {
        return Err(format!("path {:?} must start with '/'", hc.path));
    }
    if hc.unhealthy_threshold == Some(0) || hc.healthy_threshold == Some(0) {
        return Err("thresholds are at least 1".into());
    }
    Ok(hc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_overrides_merge_over_host_fields() {
        let host = BreakerFields {
            consecutive_errors: Some(5),
            interval: Some("20s".into()),
            ..BreakerFields::default()
        };
        let over = BreakerFields {
            consecutive_errors: Some(3),
            ..BreakerFields::default()
        };
        let s = host.merged(&over).settings();
        assert_eq!(s.consecutive_errors, Some(3));
        assert_eq!(s.interval, "20s");
        assert_eq!(s.base_ejection_time, "30s");
    }
}
