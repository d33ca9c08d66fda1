//! Proxy groups: what a proxy gets, by its `node.cluster`.
//!
//! - `node.cluster` naming a Gateway (`NAME` or `NAMESPACE/NAME`): that Gateway's listeners
//!   (the ports of its servers), with their route tables and filter configs;
//! - anything else (`mesh`, a workload name): the mesh's listeners, i.e. every port no Gateway
//!   serves (the sidecar's or VM's outbound ports).
//!
//! Every group gets every cluster and its endpoints (as Istio sends every cluster to every
//! proxy unless a Sidecar resource narrows it). The builder models gateways and the mesh into
//! one set of listeners by port, so a port both a Gateway and the mesh use is one listener,
//! which both groups get.
//!
//! Each group's snapshot is cut from the typed snapshot of the whole set, once per change.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::snapshot::{Snapshot, TypeSnapshot, version_of};
use crate::parse::{Kind as ResourceKind, Resource, Spec};
use crate::xds::{Kind, ResourceSet};

/// The group of proxies that are not gateways.
pub const MESH: &str = "mesh";

/// Every Gateway (`namespace/name`) and the ports of its servers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gateways(pub BTreeMap<String, BTreeSet<u32>>);

impl Gateways {
    /// The Gateways of `resources` (namespaces filled in with `namespace` where absent).
    pub fn of(resources: &[Resource], namespace: &str) -> Gateways {
        let mut gateways = BTreeMap::new();
        for r in resources {
            if r.kind != ResourceKind::Gateway {
                continue;
            }
            let Spec::Gateway(spec) = &r.spec else {
                continue;
            };
            let ns = r.metadata.namespace.as_deref().unwrap_or(namespace);
            let ports = spec
                .servers
                .iter()
                .filter_map(|s| s.port.as_ref()?.number)
                .collect();
            gateways.insert(format!("{ns}/{}", r.name), ports);
        }
        Gateways(gateways)
    }

    /// The group of a proxy whose `node.cluster` is `cluster`: `gateway/NS/NAME` or [`MESH`].
    pub fn group_of(&self, cluster: &str) -> String {
        let found = self.0.keys().find(|key| {
            key.as_str() == cluster || key.split_once('/').is_some_and(|(_, name)| name == cluster)
        });
        match found {
            Some(key) => format!("gateway/{key}"),
            None => MESH.to_owned(),
        }
    }

    /// Every group, [`MESH`] first.
    pub fn groups(&self) -> Vec<String> {
        std::iter::once(MESH.to_owned())
            .chain(self.0.keys().map(|k| format!("gateway/{k}")))
            .collect()
    }

    /// Whether listener `name` (`listener_<port>`) belongs to `group`.
    fn serves(&self, group: &str, name: &str) -> bool {
        let port: Option<u32> = name.strip_prefix("listener_").and_then(|p| p.parse().ok());
        let Some(port) = port else {
            return group == MESH;
        };
        match group.strip_prefix("gateway/") {
            Some(key) => self.0.get(key).is_some_and(|ports| ports.contains(&port)),
            None => !self.0.values().any(|ports| ports.contains(&port)),
        }
    }
}

/// Collects the route table names (`rds.route_config_name`) and ECDS filter names
/// (`http_filters[].name` of filters with `config_discovery`) a listener refers to.
fn references(value: &Value, routes: &mut BTreeSet<String>, filters: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(name)) = map.get("route_config_name") {
                routes.insert(name.clone());
            }
            if map.contains_key("config_discovery")
                && let Some(Value::String(name)) = map.get("name")
            {
                filters.insert(name.clone());
            }
            for v in map.values() {
                references(v, routes, filters);
            }
        }
        Value::Array(list) => {
            for v in list {
                references(v, routes, filters);
            }
        }
        _ => {}
    }
}

/// The snapshot of `group`: its listeners and what they refer to, every cluster and endpoint,
/// cut from `full` (the typed form of `set`).
pub fn snapshot_of(
    set: &ResourceSet,
    full: &Snapshot,
    gateways: &Gateways,
    group: &str,
) -> Snapshot {
    let mut listeners = BTreeSet::new();
    let mut routes = BTreeSet::new();
    let mut filters = BTreeSet::new();
    for l in set.of(Kind::Listener) {
        if gateways.serves(group, &l.name) {
            listeners.insert(l.name.clone());
            references(&l.body, &mut routes, &mut filters);
        }
    }
    let keep = |kind: Kind, name: &str| match kind {
        Kind::Listener => listeners.contains(name),
        Kind::Route => routes.contains(name),
        Kind::ExtensionConfig => filters.contains(name),
        Kind::Cluster | Kind::Endpoint => true,
    };
    let kinds: BTreeMap<Kind, TypeSnapshot> = full
        .kinds
        .iter()
        .map(|(kind, t)| {
            let resources: BTreeMap<_, _> = t
                .resources
                .iter()
                .filter(|(name, _)| keep(*kind, name))
                .map(|(n, e)| (n.clone(), e.clone()))
                .collect();
            let version = version_of(&resources);
            (*kind, TypeSnapshot::new(version, resources))
        })
        .collect();
    let mut digest = Sha256::new();
    for t in kinds.values() {
        digest.update(t.version.as_bytes());
        digest.update([0]);
    }
    Snapshot {
        version: hex::encode(&digest.finalize()[..8]),
        kinds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateways() -> Gateways {
        Gateways(BTreeMap::from([
            ("default/edge-a".to_owned(), BTreeSet::from([8081])),
            ("default/edge-b".to_owned(), BTreeSet::from([8082, 443])),
        ]))
    }

    #[test]
    fn node_cluster_names_a_gateway_or_is_the_mesh() {
        let g = gateways();
        assert_eq!(g.group_of("edge-a"), "gateway/default/edge-a");
        assert_eq!(g.group_of("default/edge-b"), "gateway/default/edge-b");
        assert_eq!(g.group_of("mesh"), MESH);
        assert_eq!(g.group_of("reviews-vm"), MESH);
        assert_eq!(g.group_of("other/edge-a"), MESH);
    }

    #[test]
    fn listeners_go_to_their_gateway_and_the_rest_to_the_mesh() {
        let g = gateways();
        assert!(g.serves("gateway/default/edge-a", "listener_8081"));
        assert!(!g.serves("gateway/default/edge-a", "listener_8082"));
        assert!(g.serves("gateway/default/edge-b", "listener_443"));
        assert!(g.serves(MESH, "listener_9080"));
        assert!(!g.serves(MESH, "listener_8081"));
    }

    #[test]
    fn a_group_gets_its_listeners_routes_and_filters_and_every_cluster() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo");
        let inputs = crate::Inputs::read(&[root]).unwrap();
        let options = crate::Options {
            wasm: crate::WasmModules::NotRead,
            ..crate::Options::default()
        };
        let (set, _) = crate::resources(&inputs, &options).unwrap();
        let full = Snapshot::build(&set).unwrap();
        let (resources, _) = crate::parse::parse(&inputs);
        let gateways = Gateways::of(&resources, "default");
        assert!(!gateways.0.is_empty(), "bookinfo has a Gateway");
        let mut seen = BTreeSet::new();
        for group in gateways.groups() {
            let s = snapshot_of(&set, &full, &gateways, &group);
            assert_eq!(s.of(Kind::Cluster), full.of(Kind::Cluster));
            for name in s.of(Kind::Listener).resources.keys() {
                assert!(seen.insert(name.clone()), "{name} in two groups");
            }
            for name in s.of(Kind::ExtensionConfig).resources.keys() {
                let listener = name.split('/').next().unwrap();
                assert!(
                    s.of(Kind::Listener).resources.contains_key(listener),
                    "{name}"
                );
            }
        }
        let all: BTreeSet<String> = full.of(Kind::Listener).resources.keys().cloned().collect();
        assert_eq!(seen, all, "every listener in some group");
    }
}
