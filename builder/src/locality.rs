//! Locality-aware load balancing: DestinationRule `trafficPolicy.loadBalancer.localityLbSetting`
//! against the localities of the endpoints (ServiceEntry `endpoints[].locality`, WorkloadEntry
//! `spec.locality`) and of the proxy itself (`sluice generate --locality`).
//!
//! The translation is Istio's (pilot `networking/core/loadbalancer`): endpoints are grouped into
//! one `locality_lb_endpoints` per locality, weighted by the sum of their endpoint weights;
//! `distribute` rewrites those weights for the first rule whose `from` matches the proxy (groups
//! no `to` entry matches lose their endpoints); otherwise, when the cluster has outlier detection
//! (without it Envoy would never leave priority 0), `failover` and the default failover give
//! each group a priority: same region/zone/subzone 0, same region/zone 1, same region 2, other
//! regions 3, and 4 for a region that a `failover` rule from the proxy's region does not name,
//! then compacted to 0..N. `locality_weighted_lb_config` goes on the cluster for `distribute`,
//! and for explicit `failover` with outlier detection, as Istio sets it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::diag::{Code, Diagnostic, Severity};
use crate::istio::TrafficPolicy;
use crate::model::{Discovery, Mesh};
use crate::parse::{Resource, Spec};
use crate::yaml::FieldPath;

/// A locality `region/zone/subzone`; missing parts are empty, as Envoy's `core.Locality` has
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    /// Region, e.g. `us-east`.
    pub region: String,
    /// Zone within the region.
    pub zone: String,
    /// Subzone within the zone.
    pub subzone: String,
}

impl Locality {
    /// Parses `REGION[/ZONE[/SUBZONE]]` (no empty part, no `*`, at most three parts).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.contains('*') {
            return Err(format!(
                "locality {text:?} contains '*': a concrete locality has no wildcard"
            ));
        }
        let parts: Vec<&str> = text.split('/').collect();
        if parts.len() > 3 {
            return Err(format!(
                "locality {text:?} has {} parts; the form is region/zone/subzone",
                parts.len()
            ));
        }
        if parts.iter().any(|p| p.trim().is_empty()) {
            return Err(format!(
                "locality {text:?} has an empty part; the form is region[/zone[/subzone]]"
            ));
        }
        let part = |i: usize| parts.get(i).map_or_else(String::new, |p| (*p).to_owned());
        Ok(Self {
            region: part(0),
            zone: part(1),
            subzone: part(2),
        })
    }

    /// Whether this locality has no region (an endpoint without `locality`).
    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }

    /// Istio's `LocalityMatch`: `pattern` is `region[/zone[/subzone]]` where any part may be `*`
    /// and a missing zone or subzone matches any.
    pub fn matches(&self, pattern: &str) -> bool {
        let mut parts = pattern.splitn(3, '/');
        let (region, zone, subzone) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        (region == "*" || region == self.region)
            && (zone.is_empty() || zone == "*" || zone == self.zone)
            && (subzone.is_empty() || subzone == "*" || subzone == self.subzone)
    }

    /// Istio's `LbPriority` of an endpoint locality seen from this (the proxy's) locality.
    fn lb_priority(&self, endpoint: &Locality) -> u32 {
        if self.region != endpoint.region {
            3
        } else if self.zone != endpoint.zone {
            2
        } else if self.subzone != endpoint.subzone {
            1
        } else {
            0
        }
    }
}

impl std::fmt::Display for Locality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.region)?;
        for part in [&self.zone, &self.subzone] {
            if !part.is_empty() {
                write!(f, "/{part}")?;
            }
        }
        Ok(())
    }
}

/// `LocalityLoadBalancerSetting`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    /// Weights per destination locality, by source locality.
    #[serde(default)]
    pub distribute: Vec<Distribute>,
    /// Region to fail over to, by region.
    #[serde(default)]
    pub failover: Vec<Failover>,
    /// Labels whose equality with the proxy's orders the endpoints (not supported yet).
    #[serde(default)]
    pub failover_priority: Vec<String>,
    /// `false` turns locality load balancing off for this policy.
    pub enabled: Option<bool>,
}

/// `LocalityLoadBalancerSetting.Distribute`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Distribute {
    /// Source locality pattern (`region/zone/*`).
    pub from: Option<String>,
    /// Destination locality pattern -> weight (1-100, summing to 100).
    #[serde(default)]
    pub to: BTreeMap<String, i64>,
}

/// `LocalityLoadBalancerSetting.Failover`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    /// Region of the proxy.
    pub from: Option<String>,
    /// Region its traffic fails over to.
    pub to: Option<String>,
}

/// The endpoints of one locality in a cluster's `load_assignment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalityGroup {
    /// The endpoints' locality (empty: endpoints without one).
    pub locality: Locality,
    /// Indices into the cluster's `endpoints`.
    pub endpoints: Vec<usize>,
    /// `load_balancing_weight` of the locality.
    pub weight: u32,
    /// Envoy priority (0 = most preferred).
    pub priority: u32,
}

/// How a cluster's endpoints are laid out by locality (see [`apply`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterLocality {
    /// One group per locality; empty when no endpoint has a locality (one flat group).
    pub groups: Vec<LocalityGroup>,
    /// Set `common_lb_config.locality_weighted_lb_config`.
    pub weighted: bool,
}

/// The `localityLbSetting` of a policy, if it parses (errors are [`check`]'s).
pub fn setting(policy: &TrafficPolicy) -> Option<LocalityLbSetting> {
    let raw = policy
        .load_balancer
        .as_ref()?
        .locality_lb_setting
        .as_ref()?;
    serde_json::from_value(raw.clone()).ok()
}

/// Checks every `localityLbSetting` and endpoint locality of `resources`, and warns when
/// `proxy` is unknown (no `--locality`) while some DestinationRule asks for locality load
/// balancing.
pub fn check(resources: &[Resource], proxy: Option<&Locality>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for r in resources {
        match &r.spec {
            Spec::DestinationRule(dr) => {
                let spec = FieldPath::root().key("spec");
                let mut first = None;
                let host = dr.traffic_policy.as_ref();
                let host_outlier = host.is_some_and(|p| p.outlier_detection.is_some());
                if let Some(p) = host {
                    check_policy(
                        r,
                        &spec.key("trafficPolicy"),
                        p,
                        false,
                        &mut first,
                        &mut out,
                    );
                }
                for (i, s) in dr.subsets.iter().enumerate() {
                    if let Some(p) = &s.traffic_policy {
                        let at = spec.key("subsets").index(i).key("trafficPolicy");
                        check_policy(r, &at, p, host_outlier, &mut first, &mut out);
                    }
                }
                if let (None, Some(at)) = (proxy, first) {
                    out.push(r.diag(Code::Ignored, Severity::Warning,
                        &at,
                        "localityLbSetting needs the proxy's own locality, which sluice does not know: not applied",
                        Some("pass `--locality REGION[/ZONE[/SUBZONE]]` to `sluice generate` (written to the bootstrap's node.locality); endpoints are still grouped by locality".into()),
                    ));
                }
            }
            Spec::ServiceEntry(se) => {
                for (i, ep) in se.endpoints.iter().enumerate() {
                    if let Some(l) = &ep.locality {
                        let at = FieldPath::root()
                            .key("spec")
                            .key("endpoints")
                            .index(i)
                            .key("locality");
                        check_endpoint_locality(r, &at, l, &mut out);
                    }
                }
            }
            Spec::WorkloadEntry(we) => {
                if let Some(l) = &we.locality {
                    let at = FieldPath::root().key("spec").key("locality");
                    check_endpoint_locality(r, &at, l, &mut out);
                }
            }
            _ => {}
        }
    }
    out
}

fn check_endpoint_locality(r: &Resource, at: &FieldPath, text: &str, out: &mut Vec<Diagnostic>) {
    if let Err(e) = Locality::parse(text) {
        out.push(r.error(
            Code::InvalidLocality,
            at,
            e,
            "write region/zone/subzone, e.g. us-east/zone-a",
        ));
    }
}

/// Checks one policy's `localityLbSetting` (and its `portLevelSettings`' ones); `first` gets the
/// path of the first setting found.
fn check_policy(
    r: &Resource,
    at: &FieldPath,
    policy: &TrafficPolicy,
    inherited_outlier: bool,
    first: &mut Option<FieldPath>,
    out: &mut Vec<Diagnostic>,
) {
    let outlier = inherited_outlier || policy.outlier_detection.is_some();
    if let Some(raw) = policy
        .load_balancer
        .as_ref()
        .and_then(|l| l.locality_lb_setting.as_ref())
    {
        let lat = at.key("loadBalancer").key("localityLbSetting");
        first.get_or_insert_with(|| lat.clone());
        check_setting(r, &lat, raw, outlier, out);
    }
    for (i, p) in policy.port_level_settings.iter().enumerate() {
        if let Some(raw) = p
            .load_balancer
            .as_ref()
            .and_then(|l| l.locality_lb_setting.as_ref())
        {
            let lat = at
                .key("portLevelSettings")
                .index(i)
                .key("loadBalancer")
                .key("localityLbSetting");
            first.get_or_insert_with(|| lat.clone());
            check_setting(r, &lat, raw, outlier || p.outlier_detection.is_some(), out);
        }
    }
}

fn check_setting(
    r: &Resource,
    at: &FieldPath,
    raw: &serde_json::Value,
    outlier: bool,
    out: &mut Vec<Diagnostic>,
) {
    let s: LocalityLbSetting = match serde_json::from_value(raw.clone()) {
        Ok(s) => s,
        Err(e) => {
            out.push(r.error(Code::InvalidLocality, at,
                format!("invalid localityLbSetting: {e}"),
                "fields: enabled, distribute [{from, to: {locality: weight}}], failover [{from, to}], failoverPriority",
            ));
            return;
        }
    };
    if !s.failover_priority.is_empty() {
        out.push(r.error(
            Code::UnsupportedField,
            &at.key("failoverPriority"),
            "failoverPriority is not supported yet by sluice",
            "use `failover` (region to region) or the default failover by locality",
        ));
    }
    if !s.distribute.is_empty() && !s.failover.is_empty() {
        out.push(r.error(
            Code::InvalidLocality,
            at,
            "`distribute` and `failover` cannot be set together",
            "Istio applies one of them: keep `distribute` (weights) or `failover` (priorities)",
        ));
    }
    let mut sources = Vec::new();
    for (i, d) in s.distribute.iter().enumerate() {
        let dat = at.key("distribute").index(i);
        match &d.from {
            None => out.push(r.error(
                Code::InvalidLocality,
                &dat,
                "missing `from`",
                "give the proxy locality this rule applies to, e.g. us-east/zone-a/*",
            )),
            Some(from) => sources.push((dat.key("from"), from.as_str())),
        }
        if d.to.is_empty() {
            out.push(r.error(
                Code::InvalidLocality,
                &dat,
                "missing `to`",
                "give destination localities with weights summing to 100",
            ));
            continue;
        }
        let mut total = 0i64;
        for (loc, w) in &d.to {
            if !(1..=100).contains(w) {
                out.push(r.error(
                    Code::InvalidLocality,
                    &dat.key("to").key(loc),
                    format!("locality weight {w} is outside 1-100"),
                    "weights are 1-100 and sum to 100",
                ));
            }
            total += w;
        }
        if total != 100 {
            out.push(r.error(
                Code::InvalidLocality,
                &dat.key("to"),
                format!("the weights sum to {total}, not 100"),
                "Istio requires the `to` weights of a rule to sum to 100",
            ));
        }
        let dests: Vec<(FieldPath, &str)> =
            d.to.keys()
                .map(|k| (dat.key("to").key(k), k.as_str()))
                .collect();
        check_patterns(r, &dests, out);
    }
    check_patterns(r, &sources, out);
    for (i, f) in s.failover.iter().enumerate() {
        let fat = at.key("failover").index(i);
        let (Some(from), Some(to)) = (&f.from, &f.to) else {
            out.push(r.error(
                Code::InvalidLocality,
                &fat,
                "a failover rule needs `from` and `to`",
                "both are regions, e.g. {from: us-east, to: eu-west}",
            ));
            continue;
        };
        for (field, v) in [("from", from), ("to", to)] {
            if v.contains('/') || v.contains('*') || v.is_empty() {
                out.push(r.error(
                    Code::InvalidLocality,
                    &fat.key(field),
                    format!("{v:?} is not a region"),
                    "failover rules name regions only, without '/' or '*'",
                ));
            }
        }
        if from == to {
            out.push(r.error(
                Code::InvalidLocality,
                &fat,
                format!("failover from {from:?} to itself"),
                "`from` and `to` must be different regions",
            ));
        }
    }
    if s.distribute.is_empty() && s.enabled != Some(false) && !outlier {
        out.push(r.diag(Code::Ignored, Severity::Warning,
            at,
            "locality failover applies only with outlierDetection (Istio ignores it silently without): no failover priorities for this policy",
            Some("add `outlierDetection` (e.g. {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}) so Envoy can leave an unhealthy locality".into()),
        ));
    }
}

/// Istio's `validateLocalities`: patterns `region[/zone[/subzone]]`, at most one `*`, only at
/// the end, no empty part, and no pattern covered by another.
fn check_patterns(r: &Resource, patterns: &[(FieldPath, &str)], out: &mut Vec<Diagnostic>) {
    let mut seen: Vec<&str> = Vec::new();
    for (at, p) in patterns {
        let stars = p.matches('*').count();
        let parts: Vec<&str> = p.split('/').collect();
        let problem = if stars > 1 || (stars == 1 && !p.ends_with('*')) {
            Some("the wildcard '*' may appear once, as the last part")
        } else if parts.len() > 3 || parts.iter().any(|s| s.is_empty()) {
            Some("a locality has the form region[/zone[/subzone]] with no empty part")
        } else if stars == 1 && parts.last().is_some_and(|s| *s != "*") {
            Some("the wildcard '*' stands for a whole part (us-east/*, not us-east/zone*)")
        } else {
            None
        };
        if let Some(problem) = problem {
            out.push(r.error(
                Code::InvalidLocality,
                at,
                format!("invalid locality {p:?}: {problem}"),
                "e.g. us-east, us-east/zone-a, us-east/zone-a/*, *",
            ));
            continue;
        }
        if let Some(prev) = seen.iter().find(|q| covers(q, p) || covers(p, q)) {
            out.push(r.error(
                Code::InvalidLocality,
                at,
                format!("locality {p:?} overlaps {prev:?}"),
                "each locality may be named once; a wildcard covers everything below it",
            ));
            continue;
        }
        seen.push(p);
    }
}

/// Whether pattern `a` covers every locality pattern `b` names (`us-east` covers
/// `us-east/zone-a`; `*` covers all).
fn covers(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('/').filter(|s| *s != "*").collect();
    let b: Vec<&str> = b.split('/').filter(|s| *s != "*").collect();
    a.len() <= b.len() && a.iter().zip(&b).all(|(x, y)| x == y)
}

/// Groups every cluster's endpoints by locality and applies its `localityLbSetting` for a proxy
/// in `proxy` (nothing but the grouping without it); records `proxy` on the mesh for the
/// bootstrap's `node.locality`.
pub fn apply(mesh: &mut Mesh, proxy: Option<&Locality>) {
    mesh.proxy_locality = proxy.cloned();
    for c in mesh.clusters.values_mut() {
        // A LOGICAL_DNS cluster takes exactly one endpoint in one locality group.
        if c.discovery == Discovery::LogicalDns
            || c.endpoint_localities.iter().all(String::is_empty)
        {
            continue;
        }
        let mut by_locality: BTreeMap<Locality, Vec<usize>> = BTreeMap::new();
        for (i, text) in c.endpoint_localities.iter().enumerate() {
            let loc = Locality::parse(text).unwrap_or_default();
            by_locality.entry(loc).or_default().push(i);
        }
        let mut groups: Vec<LocalityGroup> = by_locality
            .into_iter()
            .map(|(locality, endpoints)| LocalityGroup {
                weight: endpoints
                    .iter()
                    .map(|i| {
                        c.endpoints
                            .get(*i)
                            .and_then(|e| e.weight)
                            .filter(|w| *w > 0)
                            .unwrap_or(1)
                    })
                    .sum(),
                locality,
                endpoints,
                priority: 0,
            })
            .collect();
        let mut weighted = false;
        if let (Some(proxy), Some(s)) = (proxy, setting(&c.policy))
            && s.enabled != Some(false)
        {
            let outlier = c.policy.outlier_detection.is_some();
            if !s.distribute.is_empty() {
                weighted = true;
                distribute(proxy, &s.distribute, &mut groups);
            } else if outlier {
                weighted = !s.failover.is_empty();
                failover(proxy, &s.failover, &mut groups);
            }
        }
        c.locality = crate::locality::ClusterLocality { groups, weighted };
    }
}

/// Istio's `applyLocalityWeights`.
fn distribute(proxy: &Locality, rules: &[Distribute], groups: &mut [LocalityGroup]) {
    let Some(rule) = rules
        .iter()
        .find(|d| d.from.as_deref().is_some_and(|f| proxy.matches(f)))
    else {
        return;
    };
    let mut unmatched: BTreeSet<usize> = (0..groups.len()).collect();
    for (pattern, weight) in &rule.to {
        let weight = u64::try_from(*weight).unwrap_or(0);
        let matched: Vec<usize> = unmatched
            .iter()
            .copied()
            .filter(|i| groups.get(*i).is_some_and(|g| g.locality.matches(pattern)))
            .collect();
        let total: u64 = matched
            .iter()
            .filter_map(|i| groups.get(*i))
            .map(|g| u64::from(g.weight))
            .sum();
        for i in matched {
            unmatched.remove(&i);
            if let Some(g) = groups.get_mut(i)
                && total > 0
            {
                // A wildcard matching several localities splits its weight by their own.
                let share = (u64::from(g.weight) * weight).div_ceil(total);
                if share > 0 {
                    g.weight = u32::try_from(share).unwrap_or(u32::MAX);
                }
            }
        }
    }
    // Localities no `to` entry names get no traffic: Istio empties their endpoint list.
    for i in unmatched {
        if let Some(g) = groups.get_mut(i) {
            g.endpoints.clear();
        }
    }
}

/// Istio's `applyLocalityFailover`.
fn failover(proxy: &Locality, rules: &[Failover], groups: &mut [LocalityGroup]) {
    for g in groups.iter_mut() {
        let mut priority = proxy.lb_priority(&g.locality);
        if priority == 3
            && let Some(rule) = rules
                .iter()
                .find(|f| f.from.as_deref() == Some(proxy.region.as_str()))
            && rule.to.as_deref() != Some(g.locality.region.as_str())
        {
            priority = 4;
        }
        g.priority = priority;
    }
    // Envoy wants priorities 0..N without gaps.
    let used: BTreeSet<u32> = groups.iter().map(|g| g.priority).collect();
    let rank: BTreeMap<u32, u32> = used.into_iter().zip(0..).collect();
    for g in groups.iter_mut() {
        g.priority = rank.get(&g.priority).copied().unwrap_or(g.priority);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches_localities() {
        let l = Locality::parse("us-east/zone-a/rack-1").unwrap();
        assert_eq!(l.to_string(), "us-east/zone-a/rack-1");
        assert!(l.matches("us-east/*"));
        assert!(l.matches("us-east"));
        assert!(l.matches("*"));
        assert!(!l.matches("us-east/zone-b"));
        assert!(Locality::parse("us-east//x").is_err());
        assert!(Locality::parse("a/b/c/d").is_err());
        assert!(Locality::parse("us-*").is_err());
    }

    #[test]
    fn failover_priorities_are_compacted() {
        let proxy = Locality::parse("us-east/zone-a").unwrap();
        let group = |l: &str| LocalityGroup {
            locality: Locality::parse(l).unwrap(),
            endpoints: vec![0],
            weight: 1,
            priority: 0,
        };
        let mut groups = vec![
            group("eu-west/z"),
            group("us-east/zone-b"),
            group("us-west/z"),
        ];
        failover(
            &proxy,
            &[Failover {
                from: Some("us-east".into()),
                to: Some("us-west".into()),
            }],
            &mut groups,
        );
        // us-east/zone-b: same region (2 -> 0); us-west: named by failover (3 -> 1); eu-west:
        // not named (4 -> 2).
        let p: Vec<u32> = groups.iter().map(|g| g.priority).collect();
        assert_eq!(p, vec![2, 0, 1]);
    }

    #[test]
    fn distribute_splits_a_wildcard_by_weight_and_empties_the_rest() {
        let proxy = Locality::parse("us-east/zone-a").unwrap();
        let group = |l: &str, weight| LocalityGroup {
            locality: Locality::parse(l).unwrap(),
            endpoints: vec![0],
            weight,
            priority: 0,
        };
        let mut groups = vec![
            group("eu-west/z", 1),
            group("us-east/zone-a", 1),
            group("us-west/a", 1),
            group("us-west/b", 3),
        ];
        let rule = Distribute {
            from: Some("us-east/*".into()),
            to: [
                ("us-east/zone-a".to_owned(), 60),
                ("us-west/*".to_owned(), 40),
            ]
            .into(),
        };
        distribute(&proxy, &[rule], &mut groups);
        let w: Vec<(u32, usize)> = groups
            .iter()
            .map(|g| (g.weight, g.endpoints.len()))
            .collect();
        assert_eq!(w, vec![(1, 0), (60, 1), (10, 1), (30, 1)]);
    }
}
