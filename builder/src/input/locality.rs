//! Localities: the proxy's own (`sluice generate --locality REGION[/ZONE[/SUBZONE]]`), the
//! endpoints' (ServiceEntry `endpoints[].locality`, WorkloadEntry `spec.locality`), and
//! DestinationRule `trafficPolicy.loadBalancer.localityLbSetting` read as typed settings.
//! Checks are [`crate::check::locality`]; the model applies them in [`crate::model::locality`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::input::istio::TrafficPolicy;

/// A locality `region/zone/subzone`; missing parts are empty, as Envoy's `core.Locality` has
/// them.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    pub(crate) fn lb_priority(&self, endpoint: &Locality) -> u32 {
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
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Distribute {
    /// Source locality pattern (`region/zone/*`).
    pub from: Option<String>,
    /// Destination locality pattern -> weight (1-100, summing to 100).
    #[serde(default)]
    pub to: BTreeMap<String, i64>,
}

/// `LocalityLoadBalancerSetting.Failover`.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    /// Region of the proxy.
    pub from: Option<String>,
    /// Region its traffic fails over to.
    pub to: Option<String>,
}

/// The `localityLbSetting` of a policy, if it parses (errors are [`crate::check::locality::check`]'s).
pub fn setting(policy: &TrafficPolicy) -> Option<LocalityLbSetting> {
    let raw = policy
        .load_balancer
        .as_ref()?
        .locality_lb_setting
        .as_ref()?;
    serde_json::from_value(raw.clone()).ok()
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
}
