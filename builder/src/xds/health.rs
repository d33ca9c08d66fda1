//! Central health checking's effect on the resource set: each probed endpoint's result written
//! into the EDS resources (`LbEndpoint.health_status`), so every proxy gets it and none has to
//! probe.
//!
//! Pure: the set in, the set out. Only [`Kind::Endpoint`] resources change (and only those with
//! a probed endpoint), each with its content hash recomputed, so a health change gives new
//! versions of the affected cluster load assignments and nothing else: no CDS, LDS, RDS or
//! ECDS push.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{Kind, Resource, ResourceSet};
use crate::model::ProbedEndpoint;

/// A probed endpoint's health as EDS carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdsHealth {
    /// `HEALTHY`: its probes pass.
    Healthy,
    /// `UNHEALTHY`: its probes fail, or have not passed yet. Istio treats a WorkloadEntry
    /// whose health is checked as unhealthy until a probe succeeded (its `Healthy` condition
    /// defaults to false), so a new endpoint gets no traffic before it is known to serve.
    Unhealthy,
}

impl EdsHealth {
    /// The `envoy.config.core.v3.HealthStatus` name.
    pub fn name(self) -> &'static str {
        match self {
            EdsHealth::Healthy => "HEALTHY",
            EdsHealth::Unhealthy => "UNHEALTHY",
        }
    }
}

/// An EDS endpoint: `(address, port)`.
pub type Socket = (String, u32);

/// The health of every EDS endpoint a probe covers: each probed endpoint's result (by
/// [`ProbedEndpoint::key`], from `health_of`) applied to every port the workload serves.
pub fn by_socket(
    probed: &BTreeMap<String, ProbedEndpoint>,
    health_of: impl Fn(&str) -> EdsHealth,
) -> BTreeMap<Socket, EdsHealth> {
    let mut out = BTreeMap::new();
    for (key, p) in probed {
        let health = health_of(key);
        for port in &p.ports {
            // Two probes covering one socket (one workload named twice): unhealthy wins.
            let entry = out.entry((p.address.clone(), *port)).or_insert(health);
            if health == EdsHealth::Unhealthy {
                *entry = health;
            }
        }
    }
    out
}

fn socket_of(lb: &Value) -> Option<Socket> {
    let s = &lb["endpoint"]["address"]["socket_address"];
    Some((
        s["address"].as_str()?.to_owned(),
        u32::try_from(s["port_value"].as_u64()?).ok()?,
    ))
}

fn lb_endpoints_mut(assignment: &mut Value) -> impl Iterator<Item = &mut Value> {
    assignment["endpoints"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .flat_map(|locality| {
            locality["lb_endpoints"]
                .as_array_mut()
                .into_iter()
                .flatten()
        })
}

/// `set` with `health` written into its EDS resources: every `LbEndpoint` whose socket is in
/// `health` gets that `health_status`; every other resource is returned as it was (same body,
/// same hash).
pub fn apply(set: &ResourceSet, health: &BTreeMap<Socket, EdsHealth>) -> ResourceSet {
    let mut out = set.clone();
    if health.is_empty() {
        return out;
    }
    for resource in out.resources.entry(Kind::Endpoint).or_default() {
        let mut body = Value::clone(&resource.body);
        let mut changed = false;
        for lb in lb_endpoints_mut(&mut body) {
            // A draining workload stays draining whatever its probes say: it is leaving.
            if lb["health_status"] == super::resources::DRAINING {
                continue;
            }
            let Some(h) = socket_of(lb).and_then(|s| health.get(&s)) else {
                continue;
            };
            lb["health_status"] = json!(h.name());
            changed = true;
        }
        if changed {
            *resource = Resource::new(resource.name.clone(), body);
        }
    }
    out
}

/// The clusters (EDS resource names) with an endpoint at `address` on one of `ports`.
pub fn clusters_of(set: &ResourceSet, address: &str, ports: &BTreeSet<u32>) -> Vec<String> {
    set.of(Kind::Endpoint)
        .iter()
        .filter(|r| {
            let mut body = Value::clone(&r.body);
            lb_endpoints_mut(&mut body)
                .any(|lb| socket_of(lb).is_some_and(|(a, p)| a == address && ports.contains(&p)))
        })
        .map(|r| r.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Probe, ProbeCheck as Check};
    use std::time::Duration;

    fn assignment(name: &str, ports: &[u32]) -> Resource {
        let lbs: Vec<Value> = ports
            .iter()
            .map(|p| json!({"endpoint": {"address": super::super::resources::socket("10.0.0.1", *p)}}))
            .collect();
        Resource::new(
            name,
            json!({"cluster_name": name, "endpoints": [{"lb_endpoints": lbs}]}),
        )
    }

    fn set() -> ResourceSet {
        let mut set = ResourceSet::default();
        set.resources.insert(
            Kind::Cluster,
            vec![Resource::new("a", json!({"name": "a", "type": "EDS"}))],
        );
        set.resources.insert(
            Kind::Endpoint,
            vec![
                assignment("a", &[9001, 9002]),
                assignment("a-v1", &[9001]),
                assignment("other", &[7000]),
            ],
        );
        set
    }

    fn probed(port: u32, serves: &[u32]) -> (String, ProbedEndpoint) {
        let p = ProbedEndpoint {
            address: "10.0.0.1".into(),
            probe: Probe {
                check: Check::Tcp {
                    port: u16::try_from(port).unwrap(),
                },
                initial_delay: Duration::ZERO,
                timeout: Duration::from_secs(1),
                period: Duration::from_secs(10),
                success_threshold: 1,
                failure_threshold: 3,
            },
            ports: serves.iter().copied().collect(),
            source: "ServiceEntry/default/a".into(),
        };
        (p.key(), p)
    }

    #[test]
    fn health_goes_to_every_endpoint_of_the_probed_socket_and_only_eds_changes() {
        let set = set();
        let probes = BTreeMap::from([probed(9001, &[9001]), probed(9002, &[9002])]);
        let health = by_socket(&probes, |key| {
            if key.ends_with(":9001") {
                EdsHealth::Unhealthy
            } else {
                EdsHealth::Healthy
            }
        });
        let out = apply(&set, &health);
        assert_eq!(
            out.of(Kind::Cluster),
            set.of(Kind::Cluster),
            "CDS untouched"
        );
        let a = &out.get(Kind::Endpoint, "a").unwrap().body;
        let statuses: Vec<&Value> = a["endpoints"][0]["lb_endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|lb| &lb["health_status"])
            .collect();
        assert_eq!(statuses, [&json!("UNHEALTHY"), &json!("HEALTHY")]);
        assert_eq!(
            out.get(Kind::Endpoint, "a-v1").unwrap().body["endpoints"][0]["lb_endpoints"][0]["health_status"],
            "UNHEALTHY",
            "the subset's cluster gets the endpoint's health too"
        );
        assert_eq!(
            out.get(Kind::Endpoint, "other"),
            set.get(Kind::Endpoint, "other"),
            "an assignment without probed endpoints keeps its body and hash"
        );
        assert_ne!(
            out.get(Kind::Endpoint, "a").unwrap().hash,
            set.get(Kind::Endpoint, "a").unwrap().hash
        );
        // The same health again: the same hashes (versions do not churn).
        assert_eq!(apply(&set, &health), out);
        // A change of one endpoint changes only the assignments that hold it.
        let recovered = by_socket(&probes, |_| EdsHealth::Healthy);
        let after = apply(&set, &recovered);
        assert_ne!(
            after.get(Kind::Endpoint, "a-v1").unwrap().hash,
            out.get(Kind::Endpoint, "a-v1").unwrap().hash
        );
        assert_eq!(
            after.get(Kind::Endpoint, "other").unwrap().hash,
            out.get(Kind::Endpoint, "other").unwrap().hash
        );
    }

    #[test]
    fn one_probe_covers_every_port_the_workload_serves() {
        let probes = BTreeMap::from([probed(8080, &[9001, 9002])]);
        let health = by_socket(&probes, |_| EdsHealth::Unhealthy);
        assert_eq!(health.len(), 2);
        let out = apply(&set(), &health);
        let a = &out.get(Kind::Endpoint, "a").unwrap().body["endpoints"][0]["lb_endpoints"];
        assert_eq!(a[0]["health_status"], "UNHEALTHY");
        assert_eq!(a[1]["health_status"], "UNHEALTHY");
        assert_eq!(
            clusters_of(&set(), "10.0.0.1", &BTreeSet::from([9001])),
            ["a", "a-v1"]
        );
    }
}
