//! Stage `xds`: the resolved mesh as one target-neutral set of Envoy v3 resources.
//!
//! Every target is written from a [`ResourceSet`]: the `envoy` target inlines it into a static
//! bootstrap ([`ResourceSet::inline`]), `sluice serve` sends its resources over xDS as they
//! are. The set holds each resource once, in the form a control plane serves:
//!
//! - listeners ([`Kind::Listener`]) whose HTTP connection managers name their route table
//!   (`rds`) and their sluice filters (`config_discovery`, ECDS) instead of holding them, so a
//!   change of rules or weights updates a route table or a filter config in place, without
//!   rebuilding the listener (no connection drain, the wasm VM and its shared data kept);
//! - route tables ([`Kind::Route`]), one per HTTP filter chain;
//! - clusters ([`Kind::Cluster`]): a cluster of static endpoints becomes `type: EDS` and its
//!   endpoints a [`Kind::Endpoint`] resource of the same name; DNS clusters keep their host
//!   names inline, as EDS cannot carry them;
//! - extension configs ([`Kind::ExtensionConfig`]): each listener's sluice filter configs,
//!   named `<listener>/<filter>` (`<listener>/<filter>@<digest>` when the module is fetched
//!   from `sluice serve`: see `remote_module_suffix`).
//!
//! The istio target is written from the set of the mesh as one proxy sees it
//! ([`resources::mesh_wide`]): every HTTP listener merged into one, so one config per filter
//! serves every sidecar and gateway; its filter configs ([`ResourceSet::filter_configs`]) are
//! the WasmPlugins' and EnvoyFilter's.
//!
//! Every resource carries a content hash ([`Resource::hash`]): the same mesh gives the same
//! hashes on every machine and in every process, so versions derived from them never churn.

pub mod error;
pub mod filters;
pub mod health;
pub mod native;
pub mod resources;
pub mod tcp;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_core::wire;

/// The Envoy v3 resource types a [`ResourceSet`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `envoy.config.cluster.v3.Cluster` (CDS).
    Cluster,
    /// `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
    Endpoint,
    /// `envoy.config.listener.v3.Listener` (LDS).
    Listener,
    /// `envoy.config.route.v3.RouteConfiguration` (RDS).
    Route,
    /// `envoy.config.core.v3.TypedExtensionConfig` (ECDS): a sluice filter's config.
    ExtensionConfig,
}

impl Kind {
    /// Every kind, in the order a control plane pushes them so that nothing refers to a
    /// resource Envoy has not received yet (make before break: clusters, their endpoints,
    /// then listeners, their route tables and filter configs).
    pub const ALL: [Kind; 5] = [
        Kind::Cluster,
        Kind::Endpoint,
        Kind::Listener,
        Kind::Route,
        Kind::ExtensionConfig,
    ];

    /// The type URL of this kind in xDS requests and `Any` messages.
    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Kind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            Kind::ExtensionConfig => {
                "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
            }
        }
    }

    /// The kind whose type URL is `url`.
    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }
}

/// One Envoy resource: its name, its body in Envoy's v3 JSON form (the proto's JSON mapping,
/// `Any` fields with `@type`), and the hash of that body.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The resource name (what xDS requests subscribe to).
    pub name: String,
    /// The resource in Envoy's v3 JSON form, shared: a resource a build takes unchanged from
    /// the last one ([`resources::Emitted`]) is not copied.
    pub body: Arc<Value>,
    /// Hex SHA-256 of the body's serialisation: equal bodies, equal hashes.
    pub hash: String,
}

impl Resource {
    /// A resource named `name` holding `body`.
    pub fn new(name: impl Into<String>, body: Value) -> Resource {
        // serde_json's maps are ordered by key (the `preserve_order` feature is off in this
        // workspace), so the serialisation of a value is canonical. It is hashed as it is
        // written: a listener's text is megabytes on a large mesh, never needed as a String.
        let mut digest = DigestWriter(Sha256::new());
        // Writing into a digest cannot fail, nor can serialising a `Value`.
        let _ = serde_json::to_writer(&mut digest, &body);
        let hash = hex::encode(digest.0.finalize());
        Resource {
            name: name.into(),
            body: Arc::new(body),
            hash,
        }
    }
}

/// An `io::Write` that feeds a SHA-256.
struct DigestWriter(Sha256);

impl std::io::Write for DigestWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The type URL of the wasm HTTP filter's config, the only type the sluice filters' ECDS
/// subscriptions accept.
pub const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

const HCM: &str = "envoy.filters.network.http_connection_manager";

/// The resources of one mesh, by kind, each list in the model's deterministic order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSet {
    /// Resources by kind.
    pub resources: BTreeMap<Kind, Vec<Resource>>,
    /// The sluice modules the filter configs load (`router`, `canary`, ..., `suite`).
    pub modules: BTreeSet<&'static str>,
    /// The bootstrap's `node` fields the mesh asks for (the proxy's locality), if any.
    pub node: Option<Value>,
}

/// A static cluster (endpoints inline, as a bootstrap holds it) as the set's resources: an EDS
/// cluster and its endpoints when it lists them, else the cluster alone.
pub fn cluster_resources(mut cluster: Value) -> (Resource, Option<Resource>) {
    let name = cluster["name"].as_str().unwrap_or_default().to_owned();
    let mut endpoints = None;
    if cluster["type"] == "STATIC"
        && let Some(assignment) = cluster
            .as_object_mut()
            .and_then(|c| c.remove("load_assignment"))
    {
        cluster["type"] = json!("EDS");
        cluster["eds_cluster_config"] = json!({"eds_config": ads_source()});
        endpoints = Some(Resource::new(name.clone(), assignment));
    }
    (Resource::new(name, cluster), endpoints)
}

/// One sluice filter's config in a [`ResourceSet`]: an [`Kind::ExtensionConfig`] resource
/// named `<listener>/sluice-<module>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterConfig<'a> {
    /// The listener whose HTTP filter it is.
    pub listener: &'a str,
    /// The module (`router`, `canary`, `fault`, `breaker`, `suite`).
    pub module: &'static str,
    /// The `envoy.filters.http.wasm` filter's `typed_config`: VM, code, failure policy and the
    /// plugin config.
    pub typed_config: &'a Value,
}

impl FilterConfig<'_> {
    /// The plugin config, as the filter reads it in `on_configure`.
    pub fn plugin_config(&self) -> &str {
        self.typed_config["config"]["configuration"]["value"]
            .as_str()
            .unwrap_or_default()
    }
}

/// The config source of every dynamic resource: the ADS stream the proxy opened.
pub fn ads_source() -> Value {
    json!({"ads": {}, "resource_api_version": "V3"})
}

/// The config source of the sluice filters' ECDS subscriptions: ADS, with no initial fetch
/// timeout, so a listener stays warming (serves nothing) until its filters arrive instead of
/// serving requests that would bypass routing decisions.
fn ecds_source() -> Value {
    json!({"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"})
}

impl ResourceSet {
    /// Splits static listeners and clusters (every part inline, as a bootstrap holds them)
    /// into the set's resources. [`ResourceSet::inline`] is its inverse.
    pub fn from_inline(listeners: Vec<Value>, clusters: Vec<Value>) -> ResourceSet {
        let mut set = ResourceSet::default();
        for listener in listeners {
            set.add_listener(listener, &mut |_, name, body| Resource::new(name, body));
        }
        for cluster in clusters {
            let (cluster, endpoints) = cluster_resources(cluster);
            set.add_cluster(cluster, endpoints);
        }
        set
    }

    /// Splits one static listener (every part inline) into the set's resources: its route
    /// tables, its sluice filter configs, then the listener that names them. `resource` makes
    /// each resource of a kind, name and body (usually [`Resource::new`]; a build that keeps
    /// the last build's resources may return one of those instead).
    pub fn add_listener(
        &mut self,
        mut listener: Value,
        resource: &mut dyn FnMut(Kind, String, Value) -> Resource,
    ) {
        let mut add = |kind: Kind, name: String, body: Value| {
            self.resources
                .entry(kind)
                .or_default()
                .push(resource(kind, name, body));
        };
        let listener_name = listener["name"].as_str().unwrap_or_default().to_owned();
        let chains = listener["filter_chains"]
            .as_array_mut()
            .map(Vec::as_mut_slice)
            .unwrap_or_default();
        let http_chains = chains.iter().filter(|c| hcm_of(c).is_some()).count();
        let mut filter_configs: BTreeMap<String, Value> = BTreeMap::new();
        for (index, chain) in chains.iter_mut().enumerate() {
            let Some(hcm) = hcm_of_mut(chain) else {
                continue;
            };
            if let Some(mut route) = hcm.remove("route_config") {
                // One route table per chain: a listener with one certificate per SNI has
                // several, each with only its servers' virtual hosts.
                let name = if http_chains > 1 {
                    format!("{listener_name}/{index}")
                } else {
                    route["name"].as_str().unwrap_or(&listener_name).to_owned()
                };
                route["name"] = json!(name);
                hcm.insert(
                    "rds".into(),
                    json!({"config_source": ads_source(), "route_config_name": name}),
                );
                add(Kind::Route, name, route);
            }
            for filter in hcm
                .get_mut("http_filters")
                .and_then(Value::as_array_mut)
                .map(Vec::as_mut_slice)
                .unwrap_or_default()
            {
                let is_sluice = filter["typed_config"]["@type"] == WASM_FILTER_TYPE
                    && filter["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("sluice"));
                if !is_sluice {
                    continue;
                }
                let name = format!(
                    "{listener_name}/{}{}",
                    filter["name"].as_str().unwrap_or_default(),
                    remote_module_suffix(&filter["typed_config"])
                );
                // Every chain of a listener runs the same filter configs: one resource.
                filter_configs.entry(name.clone()).or_insert_with(|| {
                    // Moved, not interpolated: `json!` would copy the config.
                    let mut config = json!({ "name": name });
                    config["typed_config"] = filter["typed_config"].take();
                    config
                });
                *filter = json!({
                    "name": name,
                    "config_discovery": {
                        "config_source": ecds_source(),
                        "type_urls": [WASM_FILTER_TYPE],
                    },
                });
            }
        }
        for (name, body) in filter_configs {
            add(Kind::ExtensionConfig, name, body);
        }
        add(Kind::Listener, listener_name, listener);
    }

    /// Adds a cluster and its endpoints (as [`cluster_resources`] gives them) after the
    /// set's other clusters.
    pub fn add_cluster(&mut self, cluster: Resource, endpoints: Option<Resource>) {
        if let Some(endpoints) = endpoints {
            self.resources
                .entry(Kind::Endpoint)
                .or_default()
                .push(endpoints);
        }
        self.resources
            .entry(Kind::Cluster)
            .or_default()
            .push(cluster);
    }

    /// The resources of `kind`, in the model's order (listeners by port, clusters by name).
    pub fn of(&self, kind: Kind) -> &[Resource] {
        self.resources
            .get(&kind)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The resource of `kind` named `name`.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&Resource> {
        self.of(kind).iter().find(|r| r.name == name)
    }

    /// The resources of `kind` by name.
    pub fn index(&self, kind: Kind) -> BTreeMap<&str, &Resource> {
        self.of(kind).iter().map(|r| (r.name.as_str(), r)).collect()
    }

    /// The sluice filter configs of the set (its [`Kind::ExtensionConfig`] resources), in the
    /// set's order.
    pub fn filter_configs(&self) -> Vec<FilterConfig<'_>> {
        self.of(Kind::ExtensionConfig)
            .iter()
            .filter_map(|r| {
                let (listener, filter) = r.name.rsplit_once('/')?;
                let module = wire::MODULES
                    .into_iter()
                    .find(|m| wire::filter_name(m) == filter)?;
                Some(FilterConfig {
                    listener,
                    module,
                    typed_config: &r.body["typed_config"],
                })
            })
            .collect()
    }

    /// The static form: listeners and clusters with their route tables, filter configs and
    /// endpoints inline, as a bootstrap's `static_resources` holds them.
    pub fn inline(&self) -> (Vec<Value>, Vec<Value>) {
        let routes = self.index(Kind::Route);
        let filters = self.index(Kind::ExtensionConfig);
        let endpoints = self.index(Kind::Endpoint);
        let listeners = self
            .of(Kind::Listener)
            .iter()
            .map(|l| {
                let mut listener = Value::clone(&l.body);
                for chain in listener["filter_chains"]
                    .as_array_mut()
                    .map(Vec::as_mut_slice)
                    .unwrap_or_default()
                {
                    let Some(hcm) = hcm_of_mut(chain) else {
                        continue;
                    };
                    if let Some(rds) = hcm.remove("rds") {
                        let name = rds["route_config_name"].as_str().unwrap_or_default();
                        let mut route = routes
                            .get(name)
                            .map(|r| Value::clone(&r.body))
                            .unwrap_or_else(|| json!({"name": name}));
                        // A one-chain listener's table is named after the listener; the names
                        // of several chains' tables are kept as the set gives them.
                        route["name"] = json!(name);
                        hcm.insert("route_config".into(), route);
                    }
                    for filter in hcm
                        .get_mut("http_filters")
                        .and_then(Value::as_array_mut)
                        .map(Vec::as_mut_slice)
                        .unwrap_or_default()
                    {
                        if filter.get("config_discovery").is_none() {
                            continue;
                        }
                        let name = filter["name"].as_str().unwrap_or_default().to_owned();
                        let short = name.rsplit('/').next().unwrap_or(&name);
                        let short = short.split('@').next().unwrap_or(short).to_owned();
                        let typed_config = filters
                            .get(name.as_str())
                            .map(|r| r.body["typed_config"].clone())
                            .unwrap_or(Value::Null);
                        *filter = json!({"name": short, "typed_config": typed_config});
                    }
                }
                listener
            })
            .collect();
        let clusters = self
            .of(Kind::Cluster)
            .iter()
            .map(|c| {
                let mut cluster = Value::clone(&c.body);
                if cluster["type"] == "EDS"
                    && let Some(assignment) = endpoints.get(c.name.as_str())
                    && let Some(object) = cluster.as_object_mut()
                {
                    object.remove("eds_cluster_config");
                    object.insert("type".into(), json!("STATIC"));
                    object.insert("load_assignment".into(), Value::clone(&assignment.body));
                }
                cluster
            })
            .collect();
        (listeners, clusters)
    }

    /// One version for the whole set: the hash of every resource's kind, name and hash.
    pub fn version(&self) -> String {
        let mut digest = Sha256::new();
        for (kind, list) in &self.resources {
            for r in list {
                digest.update(kind.type_url().as_bytes());
                digest.update([0]);
                digest.update(r.name.as_bytes());
                digest.update([0]);
                digest.update(r.hash.as_bytes());
                digest.update([0]);
            }
        }
        hex::encode(digest.finalize())
    }
}

/// `@<digest>` for a filter whose module is remote code (`sluice serve --serve-modules`): the
/// first 12 hex digits of the module's sha256, so the filter config's ECDS name, and with it
/// the listener that names it, changes with the module. Envoy 1.40 fetches remote code only
/// while a listener warms (an in-place ECDS update of a warm listener would never fetch it),
/// so a new module is a new listener, warmed (fetched and checked against the sha256) before it
/// replaces the old one, which serves meanwhile. A weight change keeps the module, the name
/// and the listener: an in-place ECDS update. Empty for a module read from a file.
fn remote_module_suffix(typed_config: &Value) -> String {
    typed_config["config"]["vm_config"]["code"]["remote"]["sha256"]
        .as_str()
        .map(|sha| format!("@{}", &sha[..sha.len().min(12)]))
        .unwrap_or_default()
}

fn hcm_of(chain: &Value) -> Option<&serde_json::Map<String, Value>> {
    chain["filters"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == HCM)?
        .get("typed_config")?
        .as_object()
}

fn hcm_of_mut(chain: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    chain
        .get_mut("filters")?
        .as_array_mut()?
        .iter_mut()
        .find(|f| f["name"] == HCM)?
        .get_mut("typed_config")?
        .as_object_mut()
}
