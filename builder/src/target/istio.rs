//! Target `istio`: manifests for a mesh whose proxies are Istio's, in three files.
//!
//! - `wasmplugins.yaml`: one `extensions.istio.io/v1alpha1` WasmPlugin per sluice filter in use
//!   (with `--suite`: the one WasmPlugin `sluice-suite`, priority 40, holding the nested config),
//!   in Istio's root namespace without a selector (so every sidecar and gateway gets it), `match:
//!   mode: CLIENT` (outbound sidecar listeners and gateways: where routing decisions are made),
//!   `phase: STATS` (after Istio's authn/authz filters: a denied request is never routed) and
//!   descending `priority` router 40 > canary 30 > fault 20 > breaker 10: Istio orders plugins of
//!   one phase by descending priority. `failStrategy: FAIL_CLOSE`: a plugin that cannot run must
//!   not let traffic bypass routing. `pluginConfig` is the config of the filter in the resource
//!   set of the mesh as one proxy sees it ([`crate::xds::resources::mesh_wide`]: all listeners
//!   merged, as one Envoy sees them all; domains keep the rules of different hosts apart),
//!   written by the same code as the envoy target's. With `--attach envoyfilter`, the
//!   EnvoyFilter carries that set's `envoy.filters.http.wasm` configs, with the code the
//!   proxies load.
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

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sluice_core::wire;

use crate::input::options::Options;
pub use crate::input::options::{Attach, DEFAULT_REGISTRY, IstioOptions, ModuleSource};
use crate::input::parse::{Kind, Resource};
use crate::model::{Listener, Mesh};
use crate::xds::FilterConfig;

use super::envoy::{EmitError, Emitted};

/// Where the WasmPlugins' `sha256` pins come from: exactly the bytes that will be shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// An OCI image layout written by `sluice build --oci DIR`: each pin is the manifest digest
    /// of image `sluice-<filter>` at the source's tag, as the layout records it.
    OciLayout(std::path::PathBuf),
    /// A folder of modules (`sluice build`'s output): the module's sha256 for `file://`, for
    /// `oci://` the manifest digest of the image `sluice build --oci` makes of those bytes.
    Modules(std::path::PathBuf),
}

/// The pins of `filters` from `pins`, for `source`. A filter whose module or image is not there
/// gets no pin (and is named in the error list) rather than a wrong one: Istio refuses a module
/// whose digest differs from the pin.
pub fn pins(
    source: &ModuleSource,
    pins: &PinSource,
    filters: &[&str],
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut found = BTreeMap::new();
    let mut missing = Vec::new();
    match pins {
        PinSource::OciLayout(dir) => {
            let tag = match source {
                ModuleSource::Oci { tag, .. } => tag.as_str(),
                ModuleSource::File(_) | ModuleSource::Http(_) => {
                    missing.push(
                        "--oci-layout pins OCI images, but the modules load from files \
                         or http (--module-path, --module-url); give --wasm-dir with the modules instead"
                            .to_owned(),
                    );
                    return (found, missing);
                }
            };
            let index = std::fs::read(dir.join("index.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
            let Some(index) = index else {
                missing.push(format!(
                    "{} holds no readable index.json: not an OCI image layout written by `sluice build --oci`",
                    dir.display()
                ));
                return (found, missing);
            };
            for filter in filters {
                let reference = format!("sluice-{filter}-{tag}");
                let digest = index["manifests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == *reference)
                    .and_then(|m| m["digest"].as_str())
                    .and_then(|d| d.strip_prefix("sha256:"));
                match digest {
                    Some(hex) => {
                        found.insert((*filter).to_owned(), hex.to_owned());
                    }
                    None => missing.push(format!(
                        "{} has no image {reference} (sluice build --oci {} --tag {tag})",
                        dir.display(),
                        dir.display()
                    )),
                }
            }
        }
        PinSource::Modules(dir) => {
            for filter in filters {
                let path = dir.join(sluice_core::wire::module_file(filter));
                let Ok(wasm) = std::fs::read(&path) else {
                    missing.push(format!("{} is missing", path.display()));
                    continue;
                };
                let digest = match source {
                    ModuleSource::File(_) | ModuleSource::Http(_) => {
                        crate::package::oci::sha256_hex(&wasm)
                    }
                    // The layout is deterministic: this is the digest `sluice build --oci
                    // --tag TAG` writes for these very bytes.
                    ModuleSource::Oci { tag, .. } => {
                        let name = sluice_core::wire::filter_name(filter);
                        match crate::package::oci::image_layout(
                            &[crate::package::oci::Module {
                                name: &name,
                                wasm: &wasm,
                            }],
                            tag,
                        ) {
                            Ok(layout) => layout
                                .images
                                .first()
                                .map(|i| i.manifest_digest.trim_start_matches("sha256:").to_owned())
                                .unwrap_or_default(),
                            Err(e) => {
                                missing.push(format!("{}: cannot pack: {e}", path.display()));
                                continue;
                            }
                        }
                    }
                };
                found.insert((*filter).to_owned(), digest);
            }
        }
    }
    (found, missing)
}

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

/// Writes the Istio manifests of `mesh` (`options.suite`: one WasmPlugin `sluice-suite`,
/// `sluice_suite.wasm`, instead of one per filter). The filters' configs come from the resource
/// set of the mesh as one proxy sees it ([`crate::xds::resources::mesh_wide`]).
pub fn emit(
    resources: &[Resource],
    mesh: &Mesh,
    options: &Options,
    istio: &IstioOptions,
) -> Result<Emitted, Vec<EmitError>> {
    let merged = mesh.merged_listener();
    let set = crate::xds::resources::mesh_wide(&merged, mesh, options)?;
    let filters = set.filter_configs();
    let mut configs: BTreeMap<&'static str, Value> = BTreeMap::new();
    for filter in &filters {
        let config = serde_json::from_str(filter.plugin_config())
            .map_err(|e| vec![EmitError::internal(e.to_string())])?;
        configs.insert(filter.module, config);
    }
    // The VirtualServices keep Istio's own `fault` only when no sluice filter injects it.
    let sluice_faults = merged
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.rules)
        .any(|rule| rule.fault.is_some());

    let attachment = match istio.attach {
        Attach::WasmPlugin => (
            "wasmplugins.yaml",
            configs
                .iter()
                .map(|(filter, config)| wasm_plugin(filter, config, istio))
                .collect::<Vec<Value>>(),
        ),
        Attach::EnvoyFilter => ("envoyfilters.yaml", vec![envoy_filter(&filters, istio)?]),
    };
    let virtual_services: Vec<Value> = resources
        .iter()
        .filter(|r| r.kind == Kind::VirtualService)
        .map(|r| rewrite_virtual_service(r, &merged, mesh, sluice_faults))
        .collect();
    // Kubernetes Services are the app's own manifests: the registry, not sluice's output.
    let others: Vec<Value> = resources
        .iter()
        .filter(|r| r.kind != Kind::VirtualService && r.kind != Kind::Service)
        .map(pass_through)
        .collect();

    let mut files = BTreeMap::new();
    files.insert(attachment.0.into(), documents(&attachment.1));
    files.insert("virtualservices.yaml".into(), documents(&virtual_services));
    files.insert("resources.yaml".into(), documents(&others));
    Ok(Emitted { files })
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
        ModuleSource::Http(base) => {
            format!("{}/sluice_{filter}.wasm", base.trim_end_matches('/'))
        }
    }
}

/// The proxy contexts the filters are patched into: outbound sidecar listeners and gateways,
/// where routing is decided (as the WasmPlugins' `mode: CLIENT`).
pub const ENVOY_FILTER_CONTEXTS: [&str; 2] = ["SIDECAR_OUTBOUND", "GATEWAY"];

/// One EnvoyFilter `sluice` in the root namespace: for each context, one HTTP_FILTER patch per
/// filter in chain order, each `INSERT_BEFORE` `envoy.filters.http.router` (so the filters end up
/// in that order, just before the router), carrying the `envoy.filters.http.wasm` config of the
/// resource set, as the envoy target writes it: explicit `vm_id` (shared data between the
/// filters), V8, `failure_policy: FAIL_CLOSED`, the plugin config; only the code is where the
/// proxies find it.
fn envoy_filter(
    filters: &[FilterConfig<'_>],
    options: &IstioOptions,
) -> Result<Value, Vec<EmitError>> {
    let ordered: Vec<&FilterConfig<'_>> = PRIORITY
        .iter()
        .filter_map(|(module, _)| filters.iter().find(|f| f.module == *module))
        .collect();
    let mut patches = Vec::new();
    for context in ENVOY_FILTER_CONTEXTS {
        for filter in &ordered {
            patches.push(json!({
                "applyTo": "HTTP_FILTER",
                "match": {
                    "context": context,
                    "listener": {"filterChain": {"filter": {
                        "name": "envoy.filters.network.http_connection_manager",
                        "subFilter": {"name": "envoy.filters.http.router"},
                    }}},
                },
                "patch": {
                    "operation": "INSERT_BEFORE",
                    "value": envoy_filter_http_filter(filter, options)?,
                },
            }));
        }
    }
    Ok(json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {
            "name": "sluice",
            "namespace": options.root_namespace,
            "labels": {"app.kubernetes.io/part-of": "sluice"},
        },
        "spec": {"configPatches": patches},
    }))
}

/// The `envoy.filters.http.wasm` filter of one module, as an EnvoyFilter patch value: the
/// resource set's config with the code the proxies load.
fn envoy_filter_http_filter(
    config: &FilterConfig<'_>,
    options: &IstioOptions,
) -> Result<Value, Vec<EmitError>> {
    let filter = config.module;
    let file = sluice_core::wire::module_file(filter);
    let code = match &options.source {
        ModuleSource::File(dir) => {
            json!({"local": {"filename": format!("{}/{file}", dir.trim_end_matches('/'))}})
        }
        ModuleSource::Http(base) => {
            let Some(cluster) = &options.module_cluster else {
                return Err(vec![EmitError::option(
                    "--module-cluster",
                    "an EnvoyFilter with --module-url needs --module-cluster: Envoy fetches \
                     remote code through one of its clusters (e.g. outbound|443||downloads.example.com \
                     of a ServiceEntry for the module server)",
                )]);
            };
            let Some(sha256) = options.sha256.get(filter) else {
                return Err(vec![EmitError::option(
                    "--wasm-dir",
                    format!(
                        "an EnvoyFilter with --module-url needs the sha256 of {file} (Envoy \
                         refuses remote code without it): give --wasm-dir with the modules you serve"
                    ),
                )]);
            };
            json!({"remote": {
                "http_uri": {
                    "uri": format!("{}/{file}", base.trim_end_matches('/')),
                    "cluster": cluster,
                    "timeout": "30s",
                },
                "sha256": sha256,
                "retry_policy": {"num_retries": 3},
            }})
        }
        ModuleSource::Oci { .. } => {
            return Err(vec![
                EmitError::option(
                    "--attach",
                    "an EnvoyFilter cannot load an OCI image (only Istio's WasmPlugin pulls images)",
                )
                .with_hint(
                    "give --module-path DIR (the modules mounted on every proxy) or --module-url \
                     BASE with --module-cluster, or attach with --attach wasmplugin",
                ),
            ]);
        }
    };
    let mut typed_config = config.typed_config.clone();
    typed_config["config"]["vm_config"]["code"] = code;
    Ok(json!({"name": wire::filter_name(filter), "typed_config": typed_config}))
}

fn wasm_plugin(filter: &str, config: &Value, options: &IstioOptions) -> Value {
    let priority = PRIORITY
        .iter()
        .find(|(f, _)| *f == filter)
        .map_or(0, |(_, p)| *p);
    let mut spec = json!({
        "url": module_url(filter, &options.source),
        "pluginName": sluice_core::wire::root_id(filter),
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
            "name": sluice_core::wire::filter_name(filter),
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
        for cluster in rule.target.clusters() {
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
