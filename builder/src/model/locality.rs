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

pub use crate::input::locality::Locality;
use crate::input::locality::LocalityLbSetting;
use crate::model::{Discovery, Mesh};

/// A cluster's `localityLbSetting`, resolved (see [`LocalityLb::resolve`]).
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalityLb {
    /// Weights per destination locality, by source locality.
    pub distribute: Vec<Distribute>,
    /// Region to fail over to, by region.
    pub failover: Vec<Failover>,
}

/// A `distribute` rule: for proxies in `from`, the weight of each destination locality pattern.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Distribute {
    /// Source locality pattern (`region/zone/*`).
    pub from: String,
    /// Destination locality pattern and weight, in the input's order.
    pub to: Vec<(String, u64)>,
}

/// A `failover` rule: the region the traffic of proxies in region `from` fails over to.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Failover {
    /// Region of the proxy.
    pub from: String,
    /// Region its traffic fails over to (`None`: none named).
    pub to: Option<String>,
}

impl LocalityLb {
    /// The setting as the model applies it: `None` when `enabled: false`; rules without a
    /// `from` (which match no proxy) dropped.
    pub fn resolve(s: LocalityLbSetting) -> Option<Self> {
        if s.enabled == Some(false) {
            return None;
        }
        Some(Self {
            distribute: s
                .distribute
                .into_iter()
                .filter_map(|d| {
                    Some(Distribute {
                        from: d.from?,
                        to: d
                            .to
                            .into_iter()
                            .map(|(pattern, w)| (pattern, u64::try_from(w).unwrap_or(0)))
                            .collect(),
                    })
                })
                .collect(),
            failover: s
                .failover
                .into_iter()
                .filter_map(|f| {
                    Some(Failover {
                        from: f.from?,
                        to: f.to,
                    })
                })
                .collect(),
        })
    }
}

/// The endpoints of one locality in a cluster's `load_assignment`.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
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
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterLocality {
    /// One group per locality; empty when no endpoint has a locality (one flat group).
    pub groups: Vec<LocalityGroup>,
    /// Set `common_lb_config.locality_weighted_lb_config`.
    pub weighted: bool,
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
        if let (Some(proxy), Some(s)) = (proxy, &c.load_balancing.locality) {
            let outlier = c.policy.outlier_detection.is_some();
            if !s.distribute.is_empty() {
                weighted = true;
                distribute(proxy, &s.distribute, &mut groups);
            } else if outlier {
                weighted = !s.failover.is_empty();
                failover(proxy, &s.failover, &mut groups);
            }
        }
        c.locality = crate::model::locality::ClusterLocality { groups, weighted };
    }
}

/// Istio's `applyLocalityWeights`.
fn distribute(proxy: &Locality, rules: &[Distribute], groups: &mut [LocalityGroup]) {
    let Some(rule) = rules.iter().find(|d| proxy.matches(&d.from)) else {
        return;
    };
    let mut unmatched: BTreeSet<usize> = (0..groups.len()).collect();
    for (pattern, weight) in &rule.to {
        let weight = *weight;
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
            && let Some(rule) = rules.iter().find(|f| f.from == proxy.region)
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
                from: "us-east".into(),
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
            from: "us-east/*".into(),
            to: vec![
                ("us-east/zone-a".to_owned(), 60),
                ("us-west/*".to_owned(), 40),
            ],
        };
        distribute(&proxy, &[rule], &mut groups);
        let w: Vec<(u32, usize)> = groups
            .iter()
            .map(|g| (g.weight, g.endpoints.len()))
            .collect();
        assert_eq!(w, vec![(1, 0), (60, 1), (10, 1), (30, 1)]);
    }
}
