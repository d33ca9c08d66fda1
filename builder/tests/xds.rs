//! The target-neutral resource set (`sluice::xds`): every reference resolves, the static form
//! is exactly what the envoy target writes, hashes are stable, and a weight change moves only
//! the filter config that holds the weight (what lets `sluice serve` update it by ECDS
//! without touching the listener).

mod common;

use common::options;
use sluice::xds::{Kind, ResourceSet};
use sluice::{Inputs, resources};

fn demo_text() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo");
    let mut text = String::new();
    for file in ["services.yaml", "destination-rules.yaml", "routing.yaml"] {
        text.push_str(&std::fs::read_to_string(dir.join(file)).expect("demo file"));
        text.push_str("\n---\n");
    }
    text
}

fn set_of(text: &str) -> ResourceSet {
    resources(&Inputs::from_text("mesh.yaml", text), &options())
        .unwrap_or_else(|d| panic!("{d}"))
        .0
}

#[test]
fn every_reference_resolves_and_nothing_dangles() {
    let set = set_of(&demo_text());
    assert!(!set.of(Kind::Listener).is_empty());
    let mut rds = Vec::new();
    let mut ecds = Vec::new();
    for listener in set.of(Kind::Listener) {
        for chain in listener.body["filter_chains"].as_array().expect("chains") {
            for filter in chain["filters"].as_array().expect("filters") {
                let hcm = &filter["typed_config"];
                if let Some(name) = hcm["rds"]["route_config_name"].as_str() {
                    assert!(hcm.get("route_config").is_none(), "{}", listener.name);
                    rds.push(name.to_owned());
                }
                for http in hcm["http_filters"].as_array().into_iter().flatten() {
                    if http.get("config_discovery").is_some() {
                        ecds.push(http["name"].as_str().expect("name").to_owned());
                    }
                }
            }
        }
    }
    let names = |kind| -> Vec<String> { set.of(kind).iter().map(|r| r.name.clone()).collect() };
    rds.sort();
    ecds.sort();
    let mut routes = names(Kind::Route);
    routes.sort();
    let mut filters = names(Kind::ExtensionConfig);
    filters.sort();
    assert_eq!(rds, routes, "route tables referenced == route tables held");
    assert_eq!(
        ecds, filters,
        "filter configs referenced == filter configs held"
    );
    assert!(
        ecds.iter().any(|n| n.ends_with("/sluice-canary")),
        "{ecds:?}"
    );
    for cluster in set.of(Kind::Cluster) {
        let eds = cluster.body["type"] == "EDS";
        assert_eq!(
            eds,
            set.get(Kind::Endpoint, &cluster.name).is_some(),
            "{}",
            cluster.name
        );
        assert_eq!(eds, cluster.body.get("load_assignment").is_none());
    }
    assert!(
        !set.of(Kind::Endpoint).is_empty(),
        "the demo's static endpoints travel by EDS"
    );
}

#[test]
fn the_static_form_is_the_envoy_targets_bootstrap() {
    let text = demo_text();
    let set = set_of(&text);
    let (listeners, clusters) = set.inline();
    let output = sluice::generate(&Inputs::from_text("mesh.yaml", &text), &options())
        .unwrap_or_else(|d| panic!("{d}"));
    let yaml = String::from_utf8(output.files["envoy.yaml"].clone()).expect("UTF-8");
    let bootstrap = sluice::yaml::parse_documents(&yaml).expect("the bootstrap parses")[0]
        .root
        .to_json();
    assert_eq!(
        bootstrap["static_resources"]["listeners"],
        serde_json::json!(listeners)
    );
    assert_eq!(
        bootstrap["static_resources"]["clusters"],
        serde_json::json!(clusters)
    );
    // And splitting the static form again gives the same set.
    let again = ResourceSet::from_inline(listeners, clusters);
    assert_eq!(again.resources, set.resources);
}

#[test]
fn a_weight_change_moves_only_the_canary_filter_config() {
    let text = demo_text();
    let before = set_of(&text);
    assert_eq!(before.version(), set_of(&text).version(), "deterministic");
    let changed =
        text.replacen("weight: 90", "weight: 70", 1)
            .replacen("weight: 10", "weight: 30", 1);
    assert_ne!(changed, text, "the demo splits 90/10");
    let after = set_of(&changed);
    assert_ne!(before.version(), after.version());
    let mut moved = Vec::new();
    for kind in Kind::ALL {
        for r in after.of(kind) {
            if before.get(kind, &r.name).map(|b| &b.hash) != Some(&r.hash) {
                moved.push(format!("{kind:?} {}", r.name));
            }
        }
    }
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(
        moved[0].starts_with("ExtensionConfig ") && moved[0].ends_with("/sluice-canary"),
        "{moved:?}"
    );
}

/// Modules served by `sluice serve --serve-modules`: each filter config fetches its module
/// (remote data source pinned by sha256, no file), and its ECDS name carries the module's
/// digest, so a new module is a new listener while a weight change stays an ECDS update.
#[test]
fn served_modules_are_fetched_by_digest_and_name_their_filter_configs() {
    let served = |canary_sha: &str| sluice::Options {
        wasm: sluice::WasmModules::Served(sluice::ServedModules {
            sha256: [
                ("router".to_owned(), "a".repeat(64)),
                ("canary".to_owned(), canary_sha.to_owned()),
                ("fault".to_owned(), "c".repeat(64)),
                ("breaker".to_owned(), "d".repeat(64)),
            ]
            .into(),
        }),
        ..options()
    };
    let set_with = |text: &str, sha: &str| {
        resources(&Inputs::from_text("mesh.yaml", text), &served(sha))
            .unwrap_or_else(|d| panic!("{d}"))
            .0
    };
    let text = demo_text();
    let one = set_with(&text, &"b".repeat(64));
    let canary = one
        .of(Kind::ExtensionConfig)
        .iter()
        .find(|r| r.name.contains("sluice-canary"))
        .expect("a canary config");
    assert_eq!(
        canary.name,
        format!("listener_9080/sluice-canary@{}", "b".repeat(12))
    );
    let code = &canary.body["typed_config"]["config"]["vm_config"]["code"]["remote"];
    assert_eq!(code["sha256"], "b".repeat(64));
    assert_eq!(
        code["http_uri"]["uri"],
        "http://sluice-modules/modules/sluice_canary.wasm"
    );
    assert_eq!(code["http_uri"]["cluster"], "sluice-modules");
    for filter in one.of(Kind::ExtensionConfig) {
        assert!(
            !filter.body.to_string().contains("filename"),
            "no module file: {}",
            filter.body
        );
    }

    // A weight change: the same listener, another canary config.
    let moved = set_with(
        &text
            .replace("weight: 90", "weight: 80")
            .replace("weight: 10", "weight: 20"),
        &"b".repeat(64),
    );
    assert_eq!(one.of(Kind::Listener), moved.of(Kind::Listener));
    assert_ne!(
        one.of(Kind::ExtensionConfig),
        moved.of(Kind::ExtensionConfig)
    );
    // A new canary module: the listener names the new config.
    let rebuilt = set_with(&text, &"e".repeat(64));
    assert_ne!(one.of(Kind::Listener), rebuilt.of(Kind::Listener));
    assert!(
        rebuilt
            .of(Kind::ExtensionConfig)
            .iter()
            .any(|r| r.name == format!("listener_9080/sluice-canary@{}", "e".repeat(12)))
    );
}
