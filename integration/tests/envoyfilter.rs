//! `sluice generate --target istio --attach envoyfilter` through a real Envoy 1.40.
//!
//! No Istio runs here, so the test builds the Envoy config Istio would make of the EnvoyFilter:
//! the listeners, routes and clusters are the envoy target's for the same mesh (they route on
//! the same decision headers as the rewritten VirtualServices), the sluice filters are removed
//! from every HTTP connection manager, and the EnvoyFilter's `SIDECAR_OUTBOUND` patches are
//! applied the way Istio applies them: each `INSERT_BEFORE` the `envoy.filters.http.router`
//! filter, in the order the patches are listed. The module paths of the patches (`--module-path`,
//! a folder mounted on every proxy) are mapped to the modules' folder here.
//!
//! The patched chain must be the envoy target's chain (same filters, order, vm_id, failure
//! policy and plugin configs), and routing, the canary split, faults and the breaker behave as
//! in the envoy target, for the four-filter chain and for `--suite`.
//!
//! Needs the modules: `cargo xtask build-wasm`.

use serde_json::Value;
use sluice::emit::istio_target::{Attach, IstioOptions, ModuleSource};
use sluice::{Inputs, Options, Target};
use sluice_integration::binomial::assert_plausible;
use sluice_integration::client::{self, Request};
use sluice_integration::envoy::Envoy;
use sluice_integration::upstream::{Behavior, Upstream};
use sluice_integration::{mesh, wasm};

const LISTENER: &str = "listener_9080";
/// Where the EnvoyFilter says the modules are on the proxies.
const MOUNT: &str = "/var/lib/sluice/wasm";
const HCM: &str = "envoy.filters.network.http_connection_manager";
const ROUTER: &str = "envoy.filters.http.router";

/// The `http_filters` arrays of every HTTP connection manager of `bootstrap`.
fn http_filter_lists(bootstrap: &mut Value) -> Vec<&mut Vec<Value>> {
    let mut lists = Vec::new();
    for listener in bootstrap["static_resources"]["listeners"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        for chain in listener["filter_chains"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            for filter in chain["filters"].as_array_mut().into_iter().flatten() {
                if filter["name"] == HCM
                    && let Some(list) = filter["typed_config"]["http_filters"].as_array_mut()
                {
                    lists.push(list);
                }
            }
        }
    }
    lists
}

/// A filter with its plugin config parsed, so two serialisations of one config compare equal.
fn comparable(filter: &Value) -> Value {
    let mut filter = filter.clone();
    let value = &mut filter["typed_config"]["config"]["configuration"]["value"];
    if let Some(text) = value.as_str() {
        *value = serde_json::from_str(text).expect("plugin config JSON");
    }
    filter
}

/// The Envoy config Istio would build from the EnvoyFilter, for `mesh_yaml`.
fn istio_patched_bootstrap(mesh_yaml: &str, suite: bool) -> String {
    let inputs = Inputs::from_text("mesh.yaml", mesh_yaml);
    let options = Options {
        suite,
        ..mesh::options()
    };
    let envoy_target = mesh::envoy_yaml_with(&inputs, &options).unwrap_or_else(|e| panic!("{e:#}"));
    let mut bootstrap = sluice::yaml::parse_documents(&envoy_target).expect("YAML")[0]
        .root
        .to_json();

    let istio = sluice::generate(
        &inputs,
        &Options {
            target: Target::Istio(IstioOptions {
                attach: Attach::EnvoyFilter,
                source: ModuleSource::File(MOUNT.into()),
                ..IstioOptions::default()
            }),
            ..options.clone()
        },
    )
    .unwrap_or_else(|d| panic!("{d}"));
    assert!(!istio.files.contains_key("wasmplugins.yaml"));
    let text = String::from_utf8_lossy(&istio.files["envoyfilters.yaml"]).into_owned();
    let envoy_filter = sluice::yaml::parse_documents(&text)
        .expect("YAML")
        .into_iter()
        .map(|d| d.root.to_json())
        .find(|d| d["kind"] == "EnvoyFilter")
        .expect("an EnvoyFilter");
    let modules = format!("{}/", wasm::module_dir().display());
    let patches: Vec<Value> = envoy_filter["spec"]["configPatches"]
        .as_array()
        .expect("configPatches")
        .iter()
        .filter(|p| p["match"]["context"] == "SIDECAR_OUTBOUND")
        .map(|p| {
            assert_eq!(p["applyTo"], "HTTP_FILTER");
            assert_eq!(p["patch"]["operation"], "INSERT_BEFORE");
            assert_eq!(
                p["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
                ROUTER
            );
            let value = serde_json::to_string(&p["patch"]["value"])
                .expect("JSON")
                .replace(&format!("{MOUNT}/"), &modules);
            serde_json::from_str(&value).expect("JSON")
        })
        .collect();
    assert_eq!(patches.len(), if suite { 1 } else { 4 }, "{text}");

    for list in http_filter_lists(&mut bootstrap) {
        let generated: Vec<Value> = list.iter().map(comparable).collect();
        list.retain(|f| {
            !f["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with("sluice-")
        });
        // Istio's INSERT_BEFORE: each patch lands just before the router, after the ones before.
        for patch in &patches {
            let at = list
                .iter()
                .position(|f| f["name"] == ROUTER)
                .expect("a router filter");
            list.insert(at, patch.clone());
        }
        let patched: Vec<Value> = list.iter().map(comparable).collect();
        assert_eq!(
            patched, generated,
            "the EnvoyFilter's patches rebuild exactly the envoy target's filter chain"
        );
    }
    bootstrap.to_string()
}

fn layout(suite: bool) -> &'static str {
    if suite { "suite" } else { "chain" }
}

fn get(envoy: &Envoy, headers: &[(&str, &str)]) -> client::Response {
    client::get(envoy.listener_port(LISTENER), "shop", "/", headers)
        .unwrap_or_else(|e| panic!("GET {headers:?}: {e:#}\n{}", envoy.log()))
}

#[test]
fn routing_split_and_faults_through_the_envoyfilter_patches() {
    for suite in [false, true] {
        if suite {
            wasm::module("suite").unwrap_or_else(|e| panic!("{e:#}"));
        }
        let name = layout(suite);
        let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
        let config = istio_patched_bootstrap(&mesh::chain_mesh(&v1, &v2), suite);
        let envoy = Envoy::start(&config).unwrap_or_else(|e| panic!("{e:#}"));
        for _ in 0..5 {
            let r = get(&envoy, &[("x-tester", "yes")]);
            assert_eq!((r.status, r.served_by()), (200, Some("shop-v2")), "{name}");
        }
        let port = envoy.listener_port(LISTENER);
        let requests = vec![Request::get(port, "/").authority("shop"); 1000];
        let responses: Vec<client::Response> = client::send_many(requests, 16)
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{name}: {e:#}")))
            .collect();
        let counts = client::served_by_counts(&responses);
        assert_eq!(counts.values().sum::<u64>(), 1000, "{name}: {counts:?}");
        let on_v2 = counts.get("shop-v2").copied().unwrap_or(0);
        assert_plausible(&format!("{name}: requests on v2"), on_v2, 1000, 0.1);
        let before = v1.request_count();
        for _ in 0..10 {
            let r = get(&envoy, &[("x-fault", "abort")]);
            assert_eq!((r.status, r.served_by()), (555, None), "{name}");
        }
        assert_eq!(v1.request_count(), before, "{name}: aborts never reach v1");
    }
}

#[test]
fn the_breaker_opens_and_the_split_fails_over_through_the_envoyfilter_patches() {
    for suite in [false, true] {
        if suite {
            wasm::module("suite").unwrap_or_else(|e| panic!("{e:#}"));
        }
        let name = layout(suite);
        let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
        let config = istio_patched_bootstrap(&mesh::chain_mesh(&v1, &v2), suite);
        let envoy = Envoy::start(&config).unwrap_or_else(|e| panic!("{e:#}"));
        v2.set_behavior(Behavior::Status(500));
        for _ in 0..3 {
            let r = get(&envoy, &[("x-tester", "yes")]);
            assert_eq!((r.status, r.served_by()), (500, Some("shop-v2")), "{name}");
        }
        for _ in 0..5 {
            let r = get(&envoy, &[("x-tester", "yes")]);
            assert_eq!(r.status, 503, "{name}: the breaker answers");
            assert!(r.header_str("x-sluice-breaker").is_some(), "{name}");
        }
        assert_eq!(v2.request_count(), 3, "{name}: nothing more reaches v2");
        let port = envoy.listener_port(LISTENER);
        let requests: Vec<Request> = (0..200)
            .map(|i| {
                Request::get(port, "/")
                    .authority("shop")
                    .header("end-user", format!("user-{i}"))
            })
            .collect();
        for r in client::send_many(requests, 16) {
            let r = r.unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!((r.status, r.served_by()), (200, Some("shop-v1")), "{name}");
        }
    }
}
