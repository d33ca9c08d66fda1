//! A Kubernetes-kept mesh (`integration/fixtures/k8s-app/`: Services, Deployments,
//! VirtualServices, DestinationRules, no ServiceEntry) through the istio target and a real
//! Envoy 1.40, the way an Istio sidecar would run it.
//!
//! No istiod runs here, so the test builds the sidecar's config from what istiod would make of
//! the generated manifests: the EnvoyFilter's `SIDECAR_OUTBOUND` patches inserted before the
//! router (as in `envoyfilter.rs`), one route per rewritten VirtualService route (its
//! `x-sluice-rule` / `x-sluice-cluster` header matches, its destination as istiod names the
//! cluster: `outbound|<port>|<subset>|<fqdn>`), and a cluster of that name per subset, its
//! endpoint the in-process upstream of that version. Requests then reach the subsets the mesh
//! says, under every name a client may use for the Service.
//!
//! Needs the modules: `cargo xtask build-wasm`.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sluice::emit::istio_target::{Attach, IstioOptions, ModuleSource};
use sluice::{Inputs, Options, Target};
use sluice_integration::binomial::assert_plausible;
use sluice_integration::client::{self, Request};
use sluice_integration::envoy::Envoy;
use sluice_integration::upstream::Upstream;
use sluice_integration::{repo_root, wasm};

const MOUNT: &str = "/var/lib/sluice/wasm";

fn docs(bytes: &[u8]) -> Vec<Value> {
    sluice::yaml::parse_documents(&String::from_utf8_lossy(bytes))
        .expect("YAML")
        .into_iter()
        .map(|d| d.root.to_json())
        .collect()
}

/// istiod's route for one rewritten VirtualService route: its header matches, its cluster.
fn route(http: &Value) -> (Value, String) {
    let headers: Vec<Value> = http["match"][0]["headers"]
        .as_object()
        .expect("header matches")
        .iter()
        .map(|(name, m)| {
            json!({"name": name, "string_match": {"exact": m["exact"].as_str().expect("exact")}})
        })
        .collect();
    let destination = &http["route"][0]["destination"];
    let cluster = sluice::model::cluster_name(
        u32::try_from(destination["port"]["number"].as_u64().expect("port")).expect("u32"),
        destination["subset"].as_str().unwrap_or(""),
        destination["host"].as_str().expect("host"),
    );
    let remove: Vec<Value> = http["headers"]["request"]["remove"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (
        json!({
            "match": {"prefix": "/", "headers": headers},
            "route": {"cluster": cluster},
            "request_headers_to_remove": remove,
        }),
        cluster,
    )
}

#[test]
fn a_kubernetes_mesh_routes_through_istio_named_clusters() {
    for filter in wasm::FILTERS {
        wasm::module(filter).unwrap_or_else(|e| panic!("{e:#}"));
    }
    let inputs = Inputs::read(&[repo_root().join("integration/fixtures/k8s-app")]).expect("read");
    let output = sluice::generate(
        &inputs,
        &Options {
            target: Target::Istio(IstioOptions {
                attach: Attach::EnvoyFilter,
                source: ModuleSource::File(MOUNT.into()),
                ..IstioOptions::default()
            }),
            ..Options::default()
        },
    )
    .unwrap_or_else(|d| panic!("{d}"));

    // The filters, as the EnvoyFilter patches them in.
    let modules = format!("{}/", wasm::module_dir().display());
    let mut http_filters: Vec<Value> =
        docs(&output.files["envoyfilters.yaml"])[0]["spec"]["configPatches"]
            .as_array()
            .expect("patches")
            .iter()
            .filter(|p| p["match"]["context"] == "SIDECAR_OUTBOUND")
            .map(|p| {
                let text = p["patch"]["value"]
                    .to_string()
                    .replace(&format!("{MOUNT}/"), &modules);
                serde_json::from_str(&text).expect("JSON")
            })
            .collect();
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }));

    // Routes and clusters as istiod makes them of the rewritten VirtualServices.
    let upstreams: BTreeMap<&str, Upstream> =
        ["reviews-v1", "reviews-v2", "ratings-v1", "ratings-v2"]
            .into_iter()
            .map(|name| (name, Upstream::start(name)))
            .collect();
    let mut routes = Vec::new();
    let mut clusters = BTreeMap::new();
    for vs in docs(&output.files["virtualservices.yaml"]) {
        for http in vs["spec"]["http"].as_array().expect("http") {
            let (route, cluster) = route(http);
            routes.push(route);
            // outbound|9080|v2|reviews.bookinfo.svc.cluster.local -> reviews-v2
            let parts: Vec<&str> = cluster.split('|').collect();
            let service = parts[3].split('.').next().expect("name");
            let upstream = &upstreams[format!("{service}-{}", parts[2]).as_str()];
            clusters.insert(
                cluster.clone(),
                sluice_integration::bootstrap::static_cluster(&cluster, upstream.port(), false),
            );
        }
    }
    assert_eq!(clusters.len(), 4, "{:?}", clusters.keys());
    let bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "listener_9080",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "outbound_9080",
                        "route_config": {"virtual_hosts": [{
                            "name": "sidecar",
                            "domains": ["*"],
                            "routes": routes,
                        }]},
                        "http_filters": http_filters,
                    },
                }]}],
            }],
            "clusters": clusters.into_values().collect::<Vec<_>>(),
        },
    });
    let envoy = Envoy::start(&bootstrap.to_string()).unwrap_or_else(|e| panic!("{e:#}"));
    let port = envoy.listener_port("listener_9080");

    // Every name a client in the namespace may use for the Service reaches the rules.
    for authority in [
        "reviews",
        "reviews:9080",
        "reviews.bookinfo",
        "reviews.bookinfo.svc.cluster.local",
    ] {
        let jason = client::get(port, authority, "/", &[("end-user", "jason")]).expect("GET");
        assert_eq!(
            (jason.status, jason.served_by()),
            (200, Some("reviews-v2")),
            "{authority}: {}",
            envoy.log()
        );
        let other = client::get(port, authority, "/", client::NO_HEADERS).expect("GET");
        assert_eq!(
            (other.status, other.served_by()),
            (200, Some("reviews-v1")),
            "{authority}"
        );
    }
    // ratings: 80/20 between the subsets.
    let requests = vec![Request::get(port, "/").authority("ratings"); 1000];
    let responses: Vec<client::Response> = client::send_many(requests, 16)
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    let counts = client::served_by_counts(&responses);
    assert_eq!(counts.values().sum::<u64>(), 1000, "{counts:?}");
    let on_v2 = counts.get("ratings-v2").copied().unwrap_or(0);
    assert_plausible("ratings requests on v2", on_v2, 1000, 0.2);
    // The internal headers never reach the upstreams.
    for upstream in upstreams.values() {
        for request in upstream.requests() {
            for header in sluice_core::wire::INTERNAL_HEADERS {
                assert!(
                    !request.headers.iter().any(|(name, _)| name == header),
                    "{header} reached {}",
                    upstream.name()
                );
            }
        }
    }
}
