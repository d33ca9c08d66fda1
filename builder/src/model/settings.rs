//! The sluice-only settings of the model, resolved from valid input: per rule the canary
//! split's stickiness, schedule and failover plus the fault extras ([`rule_settings`]), per
//! cluster the breaker ([`cluster_breaker`]). Reading never reports: the annotations were
//! checked by [`crate::check::settings`], and any error there stops generation before the
//! model is built.

use sluice_core::breaker::BreakerSettings;
use sluice_core::canary::{Guard, Schedule, Sticky};

use crate::diag::{Code, Diagnostic, Severity};
use crate::input::annotations::{
    BREAKER_ANNOTATION, CANARY_ANNOTATION, CanaryRoute, DEBUG_ANNOTATION, DebugSettings,
    FAULT_ANNOTATION, FaultExtras, annotation_tree, breaker_fields, debug_secret_path,
    legacy_breaker, read_debug_secret, route_index,
};
use crate::input::parse::{Kind, Resource, Spec};
use crate::input::yaml::Value;
use crate::position::FieldPath;

/// The sluice-only settings of one rule (one VirtualService http route).
#[derive(serde::Serialize, Debug, Clone, PartialEq)]
pub struct RuleSettings {
    /// Canary stickiness of the rule's split.
    pub sticky: Option<Sticky>,
    /// Progressive schedule of the rule's split.
    pub schedule: Option<Schedule>,
    /// Failover of the rule's split (default true).
    pub failover: bool,
    /// Self-guard of the rule's split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<Guard>,
    /// The VirtualService's `sluice.dev/fault` extras.
    pub fault_extras: FaultExtras,
    /// The VirtualService's `sluice.dev/debug`, its `secretFile` resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<DebugSettings>,
}

impl Default for RuleSettings {
    fn default() -> Self {
        Self {
            sticky: None,
            schedule: None,
            failover: true,
            guard: None,
            fault_extras: FaultExtras::default(),
            debug: None,
        }
    }
}

/// The settings of rule `http[index]` of VirtualService `r` (defaults when it has none).
pub fn rule_settings(r: &Resource, index: usize) -> RuleSettings {
    let mut settings = RuleSettings::default();
    let Spec::VirtualService(vs) = &r.spec else {
        return settings;
    };
    if let Some(Ok(tree)) = annotation_tree(r, CANARY_ANNOTATION)
        && let Value::Map(entries) = &tree.value
    {
        for (key, _, node) in entries {
            if route_index(vs, key) == Some(index)
                && let Ok(route) = serde_json::from_value::<CanaryRoute>(node.to_json())
            {
                settings.sticky = route.sticky;
                settings.schedule = route.schedule;
                settings.failover = route.failover.unwrap_or(true);
                settings.guard = route.guard;
            }
        }
    }
    if let Some(Ok(tree)) = annotation_tree(r, FAULT_ANNOTATION)
        && let Ok(extras) = serde_json::from_value::<FaultExtras>(tree.to_json())
    {
        settings.fault_extras = extras;
    }
    if let Some(Ok(tree)) = annotation_tree(r, DEBUG_ANNOTATION)
        && let Ok(mut debug) = serde_json::from_value::<DebugSettings>(tree.to_json())
    {
        debug.secret_file = debug
            .secret_file
            .map(|file| debug_secret_path(&r.file, &file).display().to_string());
        // Read here, so the emitters read no input: `check::settings` read it already and
        // reported a file that cannot be read (generation stops there). Should it vanish in
        // between, the secret stays empty and the suite's config compile refuses a debug
        // section with neither a secret nor trusted networks.
        if let Some(file) = &debug.secret_file {
            debug.secret = read_debug_secret(std::path::Path::new(file)).unwrap_or_default();
        }
        settings.debug = Some(debug);
    }
    settings
}

/// The breaker of the cluster of `subset` (empty: the whole host) of the host `dr` configures:
/// the `sluice.dev/breaker` annotation (subset overrides merged over the host's fields), else
/// the legacy `circuitBreaker` block of the merged traffic policy.
pub fn cluster_breaker(
    dr: Option<&Resource>,
    subset: &str,
    policy: &crate::input::istio::TrafficPolicy,
) -> Option<BreakerSettings> {
    if let Some(r) = dr
        && let Some(Ok(tree)) = annotation_tree(r, BREAKER_ANNOTATION)
        && let Some((host, subsets)) = breaker_fields(tree)
    {
        let fields = match subsets.get(subset) {
            Some(over) => host.merged(over),
            None => host,
        };
        return Some(fields.settings());
    }
    policy.circuit_breaker.as_ref().and_then(legacy_breaker)
}

/// A `sluice.dev/debug` annotation without `--suite`: only the suite module explains requests
/// (the chained filters each see a part of the decision), so the setting would be dropped
/// without a word. A warning at the annotation says so.
pub fn check_debug_needs_suite(resources: &[Resource], suite: bool) -> Vec<Diagnostic> {
    if suite {
        return Vec::new();
    }
    resources
        .iter()
        .filter(|r| {
            r.kind == Kind::VirtualService && r.metadata.annotations.contains_key(DEBUG_ANNOTATION)
        })
        .map(|r| {
            r.diag(
                Code::Ignored,
                Severity::Warning,
                &FieldPath::annotation(DEBUG_ANNOTATION),
                format!(
                    "{DEBUG_ANNOTATION} has no effect without --suite: only the suite module \
                     answers with x-sluice-explain"
                ),
                Some("generate with --suite, or remove the annotation".to_owned()),
            )
        })
        .collect()
}

/// A `sluice.dev/fault` annotation that cannot take effect: the fault filter is attached only
/// where a rule has a `fault`, so on a listener (for the istio target: anywhere, its one config
/// serves every listener) without one, `headerFaults`, `maxActiveFaults` and `debugHeader` would
/// be dropped without a word. A warning at the annotation says so.
pub fn check_unused_fault_extras(
    mesh: &crate::model::Mesh,
    resources: &[Resource],
    merged: bool,
) -> Vec<Diagnostic> {
    let listener_has_fault = |l: &crate::model::Listener| {
        l.virtual_hosts
            .iter()
            .flat_map(|vh| &vh.rules)
            .any(|rule| rule.fault.is_some())
    };
    let anywhere = mesh.listeners.values().any(listener_has_fault);
    let mut unused = std::collections::BTreeSet::new();
    let mut used = std::collections::BTreeSet::new();
    for listener in mesh.listeners.values() {
        let has_fault = if merged {
            anywhere
        } else {
            listener_has_fault(listener)
        };
        for vh in &listener.virtual_hosts {
            if vh
                .rules
                .iter()
                .all(|r| r.sluice.fault_extras == FaultExtras::default())
            {
                continue;
            }
            if has_fault {
                used.insert(vh.name.clone());
            } else {
                unused.insert(vh.name.clone());
            }
        }
    }
    resources
        .iter()
        .filter(|r| r.kind == Kind::VirtualService)
        .filter(|r| {
            let name = format!("{}.{}", r.namespace, r.name);
            unused.contains(&name) && !used.contains(&name)
        })
        .map(|r| {
            r.diag(
                Code::Ignored,
                Severity::Warning,
                &FieldPath::annotation(FAULT_ANNOTATION),
                format!(
                    "{FAULT_ANNOTATION} has no effect: no route {} has a `fault`, so no fault \
                     filter is attached there and its settings (headerFaults, maxActiveFaults, \
                     debugHeader) are dropped",
                    if merged { "of the mesh" } else { "on this VirtualService's listeners" }
                ),
                Some(
                    "add a `fault` to a route (e.g. with percentage 0 to only enable headerFaults), \
                     or remove the annotation"
                        .into(),
                ),
            )
        })
        .collect()
}
