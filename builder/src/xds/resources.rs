//! Model -> Envoy resources: the listeners and clusters of a [`Mesh`] in Envoy's v3 JSON
//! form, every part inline, then split into a [`ResourceSet`].
//!
//! Per listener: an HTTP connection manager whose filters are the sluice filters the listener
//! uses (the chain router -> canary -> fault -> breaker, or with `--suite` the one
//! `sluice-suite` filter; see [`super::filters`]), Envoy-native filters, then Envoy's router.
//! Envoy's routes match the `x-sluice-rule` header the router sets, one route per rule, so
//! per-rule native policy (timeout, retries) sits on that route; the cluster comes from
//! `x-sluice-cluster`. Every plugin config is compiled here with the filters' own code, so a
//! config Envoy would refuse at load time is refused at build time instead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_core::wire;

use super::{Kind, Resource, ResourceSet};
use crate::input::options::{Options, WasmModules};
use crate::model::native::RouteExtras;
use crate::model::policy::LbAlgorithm;
use crate::model::{Cluster, Discovery, Listener, Mesh, RetryPolicy, Rule, SniServer};

/// Envoy's "unlimited" for circuit-breaker thresholds, as Istio emits by default (Envoy's own
/// default of 1024 would silently cap a busy service).
const UNLIMITED: u64 = 4_294_967_295;

/// The EDS `health_status` of a draining workload's endpoints (`sluice.dev/draining`).
pub const DRAINING: &str = "DRAINING";

/// Why building the resources failed (a plugin config the filters would refuse), typed; see
/// [`super::error`].
pub use super::error::EmitError;
use super::filters::{Compiled, PluginConfigs};
/// The router and canary configs, where they were before they joined the other plugin configs
/// in [`super::filters`].
pub use super::filters::{canary_config, router_config};

/// The resources of `mesh`: every listener and cluster, with the plugin configs compiled by the
/// filters' own code.
pub fn build(mesh: &Mesh, options: &Options) -> Result<ResourceSet, Vec<EmitError>> {
    build_reusing(mesh, options, &mut Emitted::default())
}

/// What a build of the resources keeps for the next one, so that `sluice serve` writes again
/// only what a change touched (see [`crate::Reuse`]).
#[derive(Debug, Default)]
pub struct Emitted {
    /// The plugin configs the filters' code compiled ([`Compiled`]).
    compiled: Compiled,
    /// Cluster name -> the model's cluster and the resources the last build wrote for it: a
    /// cluster's resources depend on it alone ([`cluster_json`]), so a cluster equal to the
    /// last build's gets the same resources, shared, not written and hashed again.
    clusters: HashMap<String, (Cluster, Resource, Option<Resource>)>,
    /// What the route tables of each listener of the last build were written from, by port:
    /// a listener whose route tables would be written from the same ([`RouteInputs`]) keeps
    /// the last build's, which are not written again. A weight change touches only a filter
    /// config, and a large mesh's route table is tens of thousands of JSON values.
    routes: BTreeMap<u32, RouteInputs>,
    /// The listener, route table and filter config resources of the last build, by kind and
    /// name: one whose body is equal is kept, not hashed again.
    resources: HashMap<Kind, HashMap<String, Resource>>,
}

/// [`build`], compiling only the plugin configs and writing only the clusters and route tables
/// that `emitted` does not hold from the last build: what `sluice serve` runs on every change.
pub fn build_reusing(
    mesh: &Mesh,
    options: &Options,
    emitted: &mut Emitted,
) -> Result<ResourceSet, Vec<EmitError>> {
    let compiled = &mut emitted.compiled;
    compiled.begin();
    let mut last_routes = std::mem::take(&mut emitted.routes);
    let mut last = std::mem::take(&mut emitted.resources);
    let kept = &mut emitted.resources;
    let mut errors = Vec::new();
    let mut modules = BTreeSet::new();
    let mut set = ResourceSet::default();
    for listener in mesh.listeners.values() {
        let port = if options.ephemeral_ports {
            0
        } else {
            listener.port
        };
        let tcp = !listener.tcp_chains.is_empty();
        let inputs = match last_routes.remove(&listener.port) {
            Some(last) if !tcp && last.are_those_of(listener) => Some(last),
            _ => None,
        };
        let routes_kept = inputs.is_some();
        if !tcp {
            let inputs = inputs.unwrap_or_else(|| RouteInputs::of(listener));
            emitted.routes.insert(listener.port, inputs);
        }
        let mut missing = None;
        let mut resource = |kind: Kind, name: String, body: Value| {
            let resource = match last.get_mut(&kind).and_then(|r| r.remove(&name)) {
                // The body is a table without virtual hosts: the kept one is the table.
                Some(route) if kind == Kind::Route && routes_kept => route,
                Some(resource) if *resource.body == body => resource,
                _ => {
                    if kind == Kind::Route && routes_kept {
                        missing = Some(name.clone());
                    }
                    Resource::new(name, body)
                }
            };
            kept.entry(kind)
                .or_default()
                .insert(resource.name.clone(), resource.clone());
            resource
        };
        if tcp {
            let address = socket(&options.listen_address, port);
            set.add_listener(super::tcp::listener_json(listener, address), &mut resource);
            continue;
        }
        let name = listener.name();
        match listener_json(
            listener,
            &name,
            &name,
            mesh,
            options,
            &mut modules,
            compiled,
            !routes_kept,
        ) {
            Ok(mut l) => {
                super::native::decorate_listener(listener, &mut l);
                set.add_listener(l, &mut resource);
            }
            Err(e) => errors.push(e),
        }
        if let Some(route) = missing {
            // Equal listeners have route tables of the same names; a bug if not.
            errors.push(EmitError::internal(format!(
                "internal error: the route table {route:?} of an unchanged listener was not kept"
            )));
        }
    }
    if !errors.is_empty() {
        // The next build writes every route table: a listener that failed kept none.
        emitted.routes.clear();
        return Err(errors);
    }
    // Sized once: growing a map of thousands of clusters rehashes and moves them again.
    let mut last = std::mem::replace(
        &mut emitted.clusters,
        HashMap::with_capacity(mesh.clusters.len()),
    );
    for (name, cluster) in &mesh.clusters {
        let (model, resource, endpoints) = match last.remove(name) {
            Some(kept) if kept.0 == *cluster => kept,
            _ => {
                let (resource, endpoints) = super::cluster_resources(cluster_json(cluster));
                (cluster.clone(), resource, endpoints)
            }
        };
        set.add_cluster(resource.clone(), endpoints.clone());
        emitted
            .clusters
            .insert(name.clone(), (model, resource, endpoints));
    }
    set.modules = modules;
    set.node = super::native::node(mesh);
    Ok(set)
}

/// The name of the one listener of [`mesh_wide`] (its route table is named alike, its filter
/// configs `mesh/sluice-<module>`).
pub const MESH_WIDE: &str = "mesh";

/// The resources of the mesh as one proxy that serves every port with one filter config sees
/// it: `merged` ([`Mesh::merged_listener`]) as one listener named [`MESH_WIDE`], with its
/// route table and its sluice filter configs, compiled as for any listener (an error names
/// "the merged config of all listeners"). No clusters: the istio target, which is written from
/// this set, leaves them to Istio.
pub fn mesh_wide(
    merged: &Listener,
    mesh: &Mesh,
    options: &Options,
) -> Result<ResourceSet, Vec<EmitError>> {
    let mut modules = BTreeSet::new();
    let listener = listener_json(
        merged,
        MESH_WIDE,
        "the merged config of all listeners",
        mesh,
        options,
        &mut modules,
        &mut Compiled::default(),
        true,
    )
    .map_err(|e| vec![e])?;
    let mut set = ResourceSet::from_inline(vec![listener], Vec::new());
    set.modules = modules;
    Ok(set)
}

/// The file name of a sluice module: `sluice_<module>.wasm`.
pub fn module_file(module: &str) -> String {
    wire::module_file(module)
}

fn module_path(filter: &str, options: &Options) -> String {
    match &options.wasm {
        WasmModules::Bundle { module_dir, .. } => module_dir.join(module_file(filter)),
        WasmModules::Reference(dir) => dir.join(module_file(filter)),
        WasmModules::NotRead | WasmModules::Served(_) => module_file(filter).into(),
    }
    .display()
    .to_string()
}

pub(crate) fn socket(address: &str, port: u32) -> Value {
    json!({"socket_address": {"address": address, "port_value": port}})
}

fn duration(d: Duration) -> String {
    sluice_core::duration::format(d)
}

/// The bootstrap cluster through which the filter configs of `sluice serve --serve-modules`
/// fetch the modules: every serve replica's admin address (`generate --target envoy-xds
/// --modules-server`).
pub const MODULES_CLUSTER: &str = "sluice-modules";

/// Where serve's admin port serves the modules: `/modules/sluice_<module>.wasm`.
pub const MODULES_PATH: &str = "/modules/";

/// The URI a filter config fetches `module` from (`http://sluice-modules/modules/sluice_<module>.wasm`):
/// the host is only the `:authority` sent; [`MODULES_CLUSTER`] says where it goes.
pub fn served_module_uri(module: &str) -> String {
    format!(
        "http://{MODULES_CLUSTER}{MODULES_PATH}{}",
        module_file(module)
    )
}

/// `vm_config.code` of `filter`: a file on the proxy's host, or (`--serve-modules`) Envoy's
/// remote data source pinned by the sha256 of the bytes serve serves.
fn module_code(filter: &str, options: &Options) -> Value {
    match &options.wasm {
        WasmModules::Served(served) => json!({"remote": {
            "http_uri": {
                "uri": served_module_uri(filter),
                "cluster": MODULES_CLUSTER,
                "timeout": "30s",
            },
            // Envoy refuses bytes of another digest; serve refuses to load a config that
            // needs a module it does not have, so this is never empty in a served config.
            "sha256": served.sha256.get(filter).cloned().unwrap_or_default(),
            // Envoy fetches while the listener warms (the old listener, if any, keeps
            // serving): a module server that is down, or bytes that do not match the pin, keep
            // the listener warming and retried (about 58 days at 5 s) instead of letting it
            // serve with a filter that has no code.
            "retry_policy": {
                "retry_back_off": {"base_interval": "0.5s", "max_interval": "5s"},
                "num_retries": 1_000_000,
            },
        }}),
        _ => json!({"local": {"filename": module_path(filter, options)}}),
    }
}

fn wasm_filter(filter: &str, config_json: String, options: &Options) -> Value {
    let mut wasm = wasm_http_filter(filter, module_code(filter, options), config_json);
    if let WasmModules::Served(_) = options.wasm {
        // Envoy keys a VM by (vm_id, vm configuration, code), and while a remote module is
        // still being fetched it computes that key with no code: the modules, sharing vm_id
        // `sluice` (for the breaker's shared data), would then share one VM, and every filter
        // would run the first module fetched. A vm configuration naming the module keeps their
        // keys apart; the filters do not read it.
        wasm["typed_config"]["config"]["vm_config"]["configuration"] = json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": wire::root_id(filter),
        });
    }
    wasm
}

/// The `envoy.filters.http.wasm` filter of one sluice module: filter name `sluice-<filter>`,
/// root id `sluice_<filter>`, the shared `vm_id` (the filters read each other's shared data),
/// V8, the plugin config, `failure_policy: FAIL_CLOSED`; `code` is the `vm_config.code` (a
/// local file). The envoy target writes exactly this; the istio target's EnvoyFilter too, with
/// the code its proxies load.
fn wasm_http_filter(filter: &str, code: Value, config_json: String) -> Value {
    let id = wire::root_id(filter);
    let mut filter = json!({
        "name": wire::filter_name(filter),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": id,
                "root_id": id,
                "vm_config": {
                    "vm_id": wire::VM_ID,
                    "runtime": "envoy.wasm.runtime.v8",
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                },
                // A filter that cannot run must not let traffic bypass routing decisions.
                "failure_policy": "FAIL_CLOSED",
            },
        },
    });
    // Moved in, not interpolated: `json!` copies what it interpolates (`to_value`), and a
    // config is up to megabytes.
    let config = &mut filter["typed_config"]["config"];
    config["vm_config"]["code"] = code;
    config["configuration"]["value"] = Value::String(config_json);
    filter
}

/// The listener `name` of `listener`, its HTTP connection manager with the sluice filters'
/// configs and the route table inline; `label` names it in errors. Without `routes`, the route
/// table has no virtual hosts: the caller kept them from the last build ([`RouteInputs`]).
#[allow(clippy::too_many_arguments)]
fn listener_json(
    listener: &Listener,
    name: &str,
    label: &str,
    mesh: &Mesh,
    options: &Options,
    used: &mut std::collections::BTreeSet<&'static str>,
    compiled: &mut Compiled,
    routes: bool,
) -> Result<Value, EmitError> {
    let mut http_filters = Vec::new();
    for (module, json) in PluginConfigs::layout_reusing(
        listener,
        mesh,
        label,
        (options.suite, options.detailed_replies),
        compiled,
    )? {
        http_filters.push(wasm_filter(module, json, options));
        used.insert(module);
    }
    http_filters.extend(super::native::http_filters(listener));
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }));
    // Arrays of values are moved into place: `json!` would copy each (`to_value`), and a large
    // mesh's route table is tens of thousands of values. Without `routes`, none.
    let written = if routes {
        listener.virtual_hosts.as_slice()
    } else {
        &[]
    };
    let virtual_hosts: Vec<Value> = written
        .iter()
        .map(|vh| {
            let mut virtual_host = json!({"name": vh.name, "domains": vh.domains});
            virtual_host["routes"] = Value::Array(
                vh.rules
                    .iter()
                    .flat_map(|r| super::native::routes(r, route_json(r)))
                    .collect(),
            );
            virtual_host
        })
        .collect();
    let port = if options.ephemeral_ports {
        0
    } else {
        listener.port
    };
    let mut listener = json!({
        "name": name,
        "address": socket(&options.listen_address, port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "codec_type": "AUTO",
                // The client address (Envoy's downstream remote address, the filters'
                // `source.address`) is the TCP peer, or with N trusted hops the N-th
                // x-forwarded-for entry from the right: never what a client writes there.
                "use_remote_address": true,
                "xff_num_trusted_hops": options.xff_trusted_hops,
                "route_config": {
                    "name": name,
                    // As Istio's sidecar and gateway routes: `host:<any port>` matches a domain
                    // listed without a port (`foo.example.com:12345` for `*.example.com`).
                    "ignore_port_in_host_matching": true,
                    // The internal headers never reach an upstream.
                    "request_headers_to_remove": wire::INTERNAL_HEADERS,
                },
            },
        }]}],
    });
    let manager = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
    manager["route_config"]["virtual_hosts"] = Value::Array(virtual_hosts);
    manager["http_filters"] = Value::Array(http_filters);
    Ok(listener)
}

/// What a listener's route tables are written from ([`listener_json`],
/// [`super::native::routes`], [`super::native::decorate_listener`]): its HTTPS redirect and
/// SNI servers, its virtual hosts' names and domains, and of each rule its name, timeout,
/// retries, native extras and target clusters. The rest of a rule (matches, split weights,
/// faults, sluice settings) goes into the filters' configs.
#[derive(Debug)]
struct RouteInputs {
    https_redirect: bool,
    sni_servers: Vec<SniServer>,
    virtual_hosts: Vec<VirtualHostRoutes>,
}

/// What a virtual host's routes are written from (see [`RouteInputs`]).
#[derive(Debug)]
struct VirtualHostRoutes {
    name: String,
    domains: Vec<String>,
    rules: Vec<RuleRoute>,
}

/// What a rule's routes are written from (see [`RouteInputs`]).
#[derive(Debug)]
struct RuleRoute {
    name: String,
    timeout: Option<Duration>,
    retries: Option<RetryPolicy>,
    native: RouteExtras,
    /// The target's clusters in order (the routes of destinations with headers follow it);
    /// a split's weights are the canary's.
    clusters: Vec<String>,
}

impl RouteInputs {
    fn of(listener: &Listener) -> RouteInputs {
        RouteInputs {
            https_redirect: listener.https_redirect,
            sni_servers: listener.sni_servers.clone(),
            virtual_hosts: listener
                .virtual_hosts
                .iter()
                .map(|vh| VirtualHostRoutes {
                    name: vh.name.clone(),
                    domains: vh.domains.clone(),
                    rules: vh.rules.iter().map(RuleRoute::of).collect(),
                })
                .collect(),
        }
    }

    /// Whether `listener`'s route tables would be written from these. Every field of the
    /// listener and its rules is named, so a new one is a decision here, not a route table
    /// silently kept.
    fn are_those_of(&self, listener: &Listener) -> bool {
        let Listener {
            port: _,
            virtual_hosts,
            tls: _,
            https_redirect,
            sni_servers,
            tcp_chains: _,
        } = listener;
        self.https_redirect == *https_redirect
            && self.sni_servers == *sni_servers
            && self.virtual_hosts.len() == virtual_hosts.len()
            && self
                .virtual_hosts
                .iter()
                .zip(virtual_hosts)
                .all(|(kept, vh)| {
                    kept.name == vh.name
                        && kept.domains == vh.domains
                        && kept.rules.len() == vh.rules.len()
                        && kept
                            .rules
                            .iter()
                            .zip(&vh.rules)
                            .all(|(k, r)| k.is_that_of(r))
                })
    }
}

impl RuleRoute {
    fn of(rule: &Rule) -> RuleRoute {
        RuleRoute {
            name: rule.name.clone(),
            timeout: rule.timeout,
            retries: rule.retries.clone(),
            native: rule.native.clone(),
            clusters: rule.target.clusters().map(str::to_owned).collect(),
        }
    }

    /// Whether `rule`'s routes would be written from this (see [`RouteInputs::are_those_of`]).
    fn is_that_of(&self, rule: &Rule) -> bool {
        let Rule {
            name,
            matches: _,
            target,
            timeout,
            retries,
            fault: _,
            sluice: _,
            native,
            origin: _,
        } = rule;
        self.name == *name
            && self.timeout == *timeout
            && self.retries == *retries
            && self.native == *native
            && self
                .clusters
                .iter()
                .map(String::as_str)
                .eq(target.clusters())
    }
}

fn route_json(rule: &Rule) -> Value {
    let mut action = json!({
        "cluster_header": wire::CLUSTER_HEADER,
        // Istio's default is no timeout (Envoy's would be 15s).
        "timeout": duration(rule.timeout.unwrap_or_default()),
    });
    if let Some(retry) = rule.retries.as_ref().filter(|r| r.attempts > 0) {
        action["retry_policy"] = retry_json(retry);
    }
    json!({
        "name": rule.name,
        "match": {
            "prefix": "/",
            "headers": [{"name": wire::RULE_HEADER, "string_match": {"exact": rule.name}}],
        },
        "route": action,
    })
}

fn retry_json(r: &RetryPolicy) -> Value {
    let mut policy = json!({
        "retry_on": r.retry_on.join(","),
        "num_retries": r.attempts,
    });
    if let Some(t) = r.per_try_timeout {
        policy["per_try_timeout"] = json!(duration(t));
    }
    if !r.status_codes.is_empty() {
        policy["retriable_status_codes"] = json!(r.status_codes);
    }
    if r.ignore_previous_hosts {
        policy["retry_host_predicate"] = json!([{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
        }]);
        policy["host_selection_retry_max_attempts"] = json!(5);
    }
    if let Some(b) = r.backoff {
        policy["retry_back_off"] = json!({"base_interval": duration(b)});
    }
    policy
}

fn cluster_json(c: &Cluster) -> Value {
    let pool = &c.policy.connection_pool;
    let lb_policy = match c.load_balancing.algorithm {
        LbAlgorithm::RoundRobin => "ROUND_ROBIN",
        LbAlgorithm::Random => "RANDOM",
        // PASSTHROUGH becomes ORIGINAL_DST in `native::decorate_cluster`.
        LbAlgorithm::LeastRequest | LbAlgorithm::Passthrough => "LEAST_REQUEST",
    };
    let endpoints: Vec<Value> = c
        .endpoints
        .iter()
        .map(|e| {
            let mut lb = json!({"endpoint": {"address": socket(&e.address, e.port)}});
            if let Some(w) = e.weight.filter(|w| *w > 0) {
                lb["load_balancing_weight"] = json!(w);
            }
            if e.draining {
                // Envoy sends a DRAINING host no new requests (it leaves the load balancing
                // as an unhealthy one does) and lets those in flight finish.
                lb["health_status"] = json!(DRAINING);
            }
            lb
        })
        .collect();
    let mut cluster = json!({
        "name": c.name,
        "type": match c.discovery {
            Discovery::Static => "STATIC",
            Discovery::StrictDns => "STRICT_DNS",
            Discovery::LogicalDns => "LOGICAL_DNS",
        },
        "connect_timeout": duration(pool.connect_timeout),
        "lb_policy": lb_policy,
        "load_assignment": {"cluster_name": c.name, "endpoints": [{"lb_endpoints": endpoints}]},
        "circuit_breakers": {"thresholds": [{
            "max_connections": pool.max_connections.unwrap_or(UNLIMITED),
            "max_pending_requests": pool.max_pending_requests.unwrap_or(UNLIMITED),
            "max_requests": pool.max_requests.unwrap_or(UNLIMITED),
            "max_retries": pool.max_retries.unwrap_or(UNLIMITED),
        }]},
    });
    if c.discovery != Discovery::Static {
        cluster["dns_lookup_family"] = json!("V4_ONLY");
    }
    let mut protocol = serde_json::Map::new();
    let mut common = serde_json::Map::new();
    if let Some(n) = pool.max_requests_per_connection {
        common.insert("max_requests_per_connection".into(), json!(n));
    }
    if let Some(t) = pool.idle_timeout {
        common.insert("idle_timeout".into(), json!(duration(t)));
    }
    if !common.is_empty() {
        protocol.insert("common_http_protocol_options".into(), Value::Object(common));
    }
    if c.http2 {
        protocol.insert(
            "explicit_http_config".into(),
            json!({"http2_protocol_options": {}}),
        );
    }
    if !protocol.is_empty() {
        if !c.http2 {
            protocol.insert(
                "explicit_http_config".into(),
                json!({"http_protocol_options": {}}),
            );
        }
        protocol.insert(
            "@type".into(),
            json!("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
        );
        cluster["typed_extension_protocol_options"] =
            json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": protocol});
    }
    if let Some(od) = &c.policy.outlier_detection {
        let mut o = serde_json::Map::new();
        if let Some(n) = od.consecutive_5xx {
            o.insert("consecutive_5xx".into(), json!(n));
            o.insert(
                "enforcing_consecutive_5xx".into(),
                json!(if n > 0 { 100 } else { 0 }),
            );
        }
        if let Some(n) = od.consecutive_gateway {
            o.insert("consecutive_gateway_failure".into(), json!(n));
            o.insert(
                "enforcing_consecutive_gateway_failure".into(),
                json!(if n > 0 { 100 } else { 0 }),
            );
        }
        for (key, d) in [
            ("interval", od.interval),
            ("base_ejection_time", od.base_ejection_time),
        ] {
            if let Some(d) = d {
                o.insert(key.into(), json!(duration(d)));
            }
        }
        if let Some(p) = od.max_ejection_percent {
            o.insert("max_ejection_percent".into(), json!(p));
        }
        cluster["outlier_detection"] = Value::Object(o);
    }
    super::native::decorate_cluster(c, &mut cluster);
    cluster
}
