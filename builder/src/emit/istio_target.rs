//! Target `istio`: manifests for a mesh whose proxies are Istio's, in three files.
//!
//! - `wasmplugins.yaml`: one `extensions.istio.io/v1alpha1` WasmPlugin per sluice filter in use
//!   (with `--suite`: the one WasmPlugin `sluice-suite`, priority 40, holding the nested config),
//!   in Istio's root namespace without a selector (so every sidecar and gateway gets it), `match:
//!   mode: CLIENT` (outbound sidecar listeners and gateways: where routing decisions are made),
//!   `phase: STATS` (after Istio's authn/authz filters: a denied request is never routed) and
//!   descending `priority` router 40 > canary 30 > fault 20 > breaker 10: Istio orders plugins of
//!   one phase by descending priority. `failStrategy: FAIL_CLOSE`: a plugin that cannot run must
//!   not let traffic bypass routing. `pluginConfig` is the very config the envoy target
//!   generates, for all listeners merged (one Envoy sees them all; domains keep the rules of
//!   different hosts apart).
//! - `virtualservices.yaml`: each input VirtualService with its `http` rewritten so that Istio
//!   routes on what the filters decided: one route per (rule, destination) matching the
//!   `x-sluice-rule` and `x-sluice-cluster` headers the router/canary set, keeping the rule's
//!   native policy (timeout, retries, mirror, headers...) and removing the internal headers
//!   before the request leaves the proxy.
//! - `resources.yaml`: the other input resources as given (Gateways, DestinationRules,
//!   ServiceEntries, WorkloadEntries), minus sluice's non-Istio `trafficPolicy.circuitBreaker`
//!   blocks, which stock Istio rejects (the breaker filter carries them).
//!
//! Shared data (breaker state read by the canary's failover): Istio's WasmPlugin has no
//! `vm_id` field and leaves Envoy's `vm_id` empty for every plugin. Envoy scopes shared data by
//! `vm_id`, so all WasmPlugins of a proxy share one (empty) namespace and the breaker's
//! `sluice.breaker.<cluster>` keys are visible to the canary without an EnvoyFilter.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sluice_core::wire;

use crate::model::{Listener, Mesh, Target};
use crate::parse::{Kind, Resource};

use super::envoy::{EmitError, Emitted};
use super::filters::PluginConfigs;

/// Where the WasmPlugins fetch the modules from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// `oci://<registry>/sluice-<filter>:<tag>`: images written by `sluice build --oci`.
    Oci {
        /// Registry and repository prefix, e.g. `ghcr.io/acme`.
        registry: String,
        /// Image tag.
        tag: String,
    },
    /// `file://<dir>/sluice_<filter>.wasm`: modules already on every proxy's file system.
    File(String),
}

/// Options of the istio target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IstioOptions {
    /// Module location.
    pub source: ModuleSource,
    /// Per filter short name, the WasmPlugin `sha256` to pin (the module's for `file://`, the
    /// image manifest's for `oci://`), when known.
    pub sha256: BTreeMap<String, String>,
    /// Istio's root namespace (mesh-wide WasmPlugins live there).
    pub root_namespace: String,
}

impl Default for IstioOptions {
    fn default() -> Self {
        Self {
            source: ModuleSource::Oci {
                registry: DEFAULT_REGISTRY.into(),
                tag: env!("CARGO_PKG_VERSION").into(),
            },
            sha256: BTreeMap::new(),
            root_namespace: "istio-system".into(),
        }
    }
}

/// Registry used when `--image-registry` is not given.
pub const DEFAULT_REGISTRY: &str = "ghcr.io/sluice-proxy";

/// WasmPlugin priority per filter: descending priority is execution order within a phase. The
/// suite, alone in its layout, takes the router's place: first of sluice's plugins, so a
/// plugin someone adds after it (lower priority) sees its decision headers.
const PRIORITY: [(&str, i32); 5] = [
    ("router", 40),
    ("canary", 30),
    ("fault", 20),
    ("breaker", 10),
    ("suite", 40),
];

/// Writes the Istio manifests; `suite`: one WasmPlugin `sluice-suite` (`sluice_suite.wasm`)
/// instead of one per filter ([`crate::Options::suite`]).
pub fn emit(
    resources: &[Resource],
    mesh: &Mesh,
    options: &IstioOptions,
    suite: bool,
    detailed_replies: bool,
) -> Result<Emitted, Vec<EmitError>> {
    let merged = merged_listener(mesh);
    // The istio target has one config per filter for every listener, merged.
    let label = "the merged config of all listeners";
    let plugin_configs =
        PluginConfigs::with_detail(&merged, mesh, label, detailed_replies).map_err(|e| vec![e])?;
    let mut configs: BTreeMap<&'static str, Value> = BTreeMap::new();
    for (module, json) in plugin_configs.layout(suite, label).map_err(|e| vec![e])? {
        let config = serde_json::from_str(&json).map_err(|e| vec![e.to_string()])?;
        configs.insert(module, config);
    }
    // The VirtualServices keep Istio's own `fault` only when no sluice filter injects it.
    let sluice_faults = plugin_configs.fault.is_some();

    let plugins: Vec<Value> = configs
        .iter()
        .map(|(filter, config)| wasm_plugin(filter, config, options))
        .collect();
    let virtual_services: Vec<Value> = resources
        .iter()
        .filter(|r| r.kind == Kind::VirtualService)
        .map(|r| rewrite_virtual_service(r, &merged, mesh, sluice_faults))
        .collect();
    let others: Vec<Value> = resources
        .iter()
        .filter(|r| r.kind != Kind::VirtualService)
        .map(pass_through)
        .collect();

    let mut files = BTreeMap::new();
    files.insert("wasmplugins.yaml".into(), documents(&plugins));
    files.insert("virtualservices.yaml".into(), documents(&virtual_services));
    files.insert("resources.yaml".into(), documents(&others));
    Ok(Emitted { files })
}

/// All listeners' virtual hosts in one: a sidecar or gateway sees every port. A virtual host
/// repeated on several ports is kept once (its rules are the same), and a domain already owned by
/// an earlier virtual host is dropped from later ones (the router requires unique domains).
pub fn merged_listener(mesh: &Mesh) -> Listener {
    let mut merged = Listener::default();
    let mut names = BTreeSet::new();
    let mut domains = BTreeSet::new();
    for listener in mesh.listeners.values() {
        for vh in &listener.virtual_hosts {
            if !names.insert(vh.name.clone()) {
                continue;
            }
            let mut vh = vh.clone();
            vh.domains.retain(|d| domains.insert(d.clone()));
            if !vh.domains.is_empty() {
                merged.virtual_hosts.push(vh);
            }
        }
    }
    merged
}

fn module_url(filter: &str, source: &ModuleSource) -> String {
    match source {
        ModuleSource::Oci { registry, tag } => {
            format!(
                "oci://{}/sluice-{filter}:{tag}",
                registry.trim_end_matches('/')
            )
        }
        ModuleSource::File(dir) => {
            format!("file://{}/sluice_{filter}.wasm", dir.trim_end_matches('/'))
        }
    }
}

fn wasm_plugin(filter: &str, config: &Value, options: &IstioOptions) -> Value {
    let priority = PRIORITY
        .iter()
        .find(|(f, _)| *f == filter)
        .map_or(0, |(_, p)| *p);
    let mut spec = json!({
        "url": module_url(filter, &options.source),
        "pluginName": format!("sluice_{filter}"),
        "phase": "STATS",
        "priority": priority,
        "failStrategy": "FAIL_CLOSE",
        "type": "HTTP",
        "match": [{"mode": "CLIENT"}],
        "pluginConfig": config,
    });
    if let Some(sha) = options.sha256.get(filter) {
        spec["sha256"] = json!(sha);
    }
    if matches!(options.source, ModuleSource::Oci { .. }) {
        spec["imagePullPolicy"] = json!("IfNotPresent");
    }
    json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {
            "name": format!("sluice-{filter}"),
            "namespace": options.root_namespace,
            "labels": {"app.kubernetes.io/part-of": "sluice"},
        },
        "spec": spec,
    })
}

/// The input VirtualService with `http` replaced by routes on the filters' decision headers.
fn rewrite_virtual_service(
    r: &Resource,
    merged: &Listener,
    mesh: &Mesh,
    fault_filter: bool,
) -> Value {
    let mut doc = pass_through(r);
    let original: Vec<Value> = doc["spec"]["http"].as_array().cloned().unwrap_or_default();
    let rules: BTreeMap<&str, &crate::model::Rule> = merged
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.rules)
        .map(|rule| (rule.name.as_str(), rule))
        .collect();
    let mut http = Vec::new();
    for (i, route) in original.iter().enumerate() {
        let name = route["name"]
            .as_str()
            .map_or_else(|| format!("{}.{}.{i}", r.namespace, r.name), str::to_owned);
        let Some(rule) = rules.get(name.as_str()) else {
            // Not a routing rule the filters decide (redirect, direct response): Istio's own.
            http.push(route.clone());
            continue;
        };
        let members: Vec<&str> = match &rule.target {
            Target::Cluster(c) => vec![c.as_str()],
            Target::Split(members) => members.iter().map(|(c, _)| c.as_str()).collect(),
        };
        for cluster in members {
            let Some(c) = mesh.clusters.get(cluster) else {
                continue;
            };
            let mut out = route.clone();
            let Some(obj) = out.as_object_mut() else {
                continue;
            };
            obj.remove("match");
            obj.remove("route");
            if fault_filter {
                obj.remove("fault"); // injected by the sluice fault filter
            }
            let label = if c.subset.is_empty() {
                "default"
            } else {
                &c.subset
            };
            obj.insert("name".into(), json!(format!("{name}.{label}")));
            obj.insert(
                "match".into(),
                json!([{"headers": {
                    wire::RULE_HEADER: {"exact": name},
                    wire::CLUSTER_HEADER: {"exact": cluster},
                }}]),
            );
            let mut destination = json!({"host": c.host, "port": {"number": c.port}});
            if !c.subset.is_empty() {
                destination["subset"] = json!(c.subset);
            }
            obj.insert("route".into(), json!([{"destination": destination}]));
            let mut remove: Vec<Value> = obj
                .get("headers")
                .and_then(|h| h["request"]["remove"].as_array())
                .cloned()
                .unwrap_or_default();
            remove.extend(wire::INTERNAL_HEADERS.iter().map(|h| json!(h)));
            let headers = obj.entry("headers").or_insert_with(|| json!({}));
            headers["request"]["remove"] = Value::Array(remove);
            http.push(out);
        }
    }
    // A VirtualService of only `tcp`/`tls` routes keeps no `http` key (Istio passes those
    // routes through unchanged; an empty `http: []` would be noise in the manifest).
    if !http.is_empty() || doc["spec"].get("http").is_some() {
        doc["spec"]["http"] = Value::Array(http);
    }
    doc["metadata"]["annotations"]["sluice.dev/generated-by"] =
        json!("sluice generate --target istio: routes on x-sluice-rule/x-sluice-cluster");
    doc
}

/// The resource as written, without sluice's non-Istio `circuitBreaker` blocks.
fn pass_through(r: &Resource) -> Value {
    let mut doc = r.root.to_json();
    if r.kind == Kind::DestinationRule {
        let spec = &mut doc["spec"];
        if let Some(tp) = spec.get_mut("trafficPolicy").and_then(Value::as_object_mut) {
            tp.remove("circuitBreaker");
        }
        if let Some(subsets) = spec.get_mut("subsets").and_then(Value::as_array_mut) {
            for s in subsets {
                if let Some(tp) = s.get_mut("trafficPolicy").and_then(Value::as_object_mut) {
                    tp.remove("circuitBreaker");
                }
            }
        }
    }
    if doc["metadata"]["namespace"].is_null() {
        doc["metadata"]["namespace"] = json!(r.namespace);
    }
    doc
}

fn documents(docs: &[Value]) -> Vec<u8> {
    let mut text = String::from(
        "# Generated by `sluice generate --target istio`. Do not edit: change the Istio YAML and regenerate.\n",
    );
    for doc in docs {
        text.push_str("---\n");
        text.push_str(&super::yaml_out::to_yaml(doc));
    }
    text.into_bytes()
}
