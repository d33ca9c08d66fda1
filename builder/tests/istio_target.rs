//! `sluice generate --target istio`: every manifest validates against the openAPIV3Schema of its
//! kind and version in Istio's CRDs (the project's extract, `tests/data/istio/`), the
//! WasmPlugins order the filters and carry the filters' own configs, and the VirtualServices
//! route on the decision headers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sluice::emit::istio_target::{IstioOptions, ModuleSource};
use sluice::{Inputs, Options, Target};

mod common;
use common::{crd_schemas, to_json_schema};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Generates from `examples/<path>...`.
fn generate(paths: &[&str], options: IstioOptions) -> BTreeMap<String, Vec<Value>> {
    let paths: Vec<PathBuf> = paths
        .iter()
        .map(|p| repo().join("examples").join(p))
        .collect();
    let inputs = Inputs::read(&paths).expect("readable example");
    let output = sluice::generate(
        &inputs,
        &Options {
            target: Target::Istio(options),
            ..Options::default()
        },
    )
    .unwrap_or_else(|d| panic!("{d}"));
    output
        .files
        .iter()
        .map(|(name, bytes)| {
            let text = String::from_utf8(bytes.clone()).expect("utf-8");
            let docs = sluice::yaml::parse_documents(&text)
                .unwrap_or_else(|e| panic!("{name} is YAML: {e:?}"))
                .into_iter()
                .map(|d| d.root.to_json())
                .collect();
            (name.clone(), docs)
        })
        .collect()
}

fn assert_schema_valid(files: &BTreeMap<String, Vec<Value>>) -> usize {
    let schemas = crd_schemas();
    let mut checked = 0;
    for (file, docs) in files {
        for doc in docs {
            let key = (
                doc["apiVersion"].as_str().unwrap_or_default().to_owned(),
                doc["kind"].as_str().unwrap_or_default().to_owned(),
            );
            let schema = schemas
                .get(&key)
                .unwrap_or_else(|| panic!("{file}: no CRD schema for {key:?}"));
            let validator = jsonschema::validator_for(&to_json_schema(schema.clone()))
                .expect("the CRD schema compiles");
            let errors: Vec<String> = validator
                .iter_errors(doc)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{file} {key:?} {}:\n{}",
                doc["metadata"]["name"],
                errors.join("\n")
            );
            if key.1 == "WasmPlugin" {
                // The CRD's CEL rule: only one of selector/targetRef/targetRefs.
                let spec = &doc["spec"];
                let set = ["selector", "targetRef", "targetRefs"]
                    .iter()
                    .filter(|k| spec.get(**k).is_some())
                    .count();
                assert!(
                    set <= 1,
                    "{file}: WasmPlugin sets {set} of selector/targetRef/targetRefs"
                );
                let url = spec["url"].as_str().unwrap_or_default();
                assert!(
                    url.starts_with("oci://") || url.starts_with("file://"),
                    "url scheme (CEL rule): {url}"
                );
            }
            checked += 1;
        }
    }
    checked
}

#[test]
fn a_document_violating_the_schema_is_caught() {
    // The validator must be able to fail: a wrong failStrategy and a bad sha256.
    let schemas = crd_schemas();
    let schema = &schemas[&(
        "extensions.istio.io/v1alpha1".to_owned(),
        "WasmPlugin".to_owned(),
    )];
    let validator = jsonschema::validator_for(&to_json_schema(schema.clone())).expect("compiles");
    let bad = serde_json::json!({"spec": {"url": "oci://x/y:1", "failStrategy": "FAIL_CLOSED", "sha256": "xyz"}});
    assert_eq!(validator.iter_errors(&bad).count(), 2);
}

#[test]
fn every_manifest_of_every_example_validates_against_istio_crds() {
    let mut total = 0;
    let mut examples = vec![vec!["bookinfo".to_owned()], vec!["demo".to_owned()]];
    for entry in std::fs::read_dir(repo().join("examples/ecommerce")).expect("ecommerce examples") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".yaml") {
            examples.push(vec!["ecommerce/common".into(), format!("ecommerce/{name}")]);
        }
    }
    for paths in &examples {
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        total += assert_schema_valid(&generate(&paths, IstioOptions::default()));
    }
    assert!(total >= 10, "only {total} manifests checked");
}

#[test]
fn wasm_plugins_are_ordered_fail_closed_and_carry_the_filter_configs() {
    let mut sha256 = BTreeMap::new();
    sha256.insert("router".to_owned(), "ab".repeat(32));
    let files = generate(
        &["demo"],
        IstioOptions {
            source: ModuleSource::File("/var/lib/sluice".into()),
            sha256,
            root_namespace: "istio-system".into(),
            ..IstioOptions::default()
        },
    );
    assert_schema_valid(&files);
    let plugins = &files["wasmplugins.yaml"];
    let by_name: BTreeMap<&str, &Value> = plugins
        .iter()
        .map(|p| (p["metadata"]["name"].as_str().unwrap(), &p["spec"]))
        .collect();
    let router = by_name["sluice-router"];
    assert_eq!(router["url"], "file:///var/lib/sluice/sluice_router.wasm");
    assert_eq!(router["sha256"], "ab".repeat(32));
    assert_eq!(router["failStrategy"], "FAIL_CLOSE");
    assert_eq!(router["match"][0]["mode"], "CLIENT");
    // The router's pluginConfig is a config the router filter accepts.
    let config: sluice_core::router::RouterConfig =
        serde_json::from_value(router["pluginConfig"].clone()).expect("a RouterConfig");
    sluice_core::router::CompiledRouter::compile(&config).expect("the router accepts it");
    // Same phase, descending priority = router -> canary -> fault -> breaker.
    let order = [
        "sluice-router",
        "sluice-canary",
        "sluice-fault",
        "sluice-breaker",
    ];
    let present: Vec<&str> = order
        .iter()
        .copied()
        .filter(|n| by_name.contains_key(n))
        .collect();
    assert!(
        present.len() >= 2,
        "the demo uses router and canary at least: {present:?}"
    );
    for pair in present.windows(2) {
        let (a, b) = (by_name[pair[0]], by_name[pair[1]]);
        assert_eq!(a["phase"], b["phase"]);
        assert!(a["priority"].as_i64() > b["priority"].as_i64(), "{pair:?}");
    }
}

#[test]
fn virtual_services_route_on_the_decision_headers_and_strip_them() {
    let files = generate(&["bookinfo"], IstioOptions::default());
    let vss = &files["virtualservices.yaml"];
    let reviews = vss
        .iter()
        .find(|v| v["metadata"]["name"] == "reviews")
        .expect("reviews VirtualService");
    let routes = reviews["spec"]["http"].as_array().expect("http");
    assert!(!routes.is_empty());
    for route in routes {
        let headers = &route["match"][0]["headers"];
        let cluster = headers["x-sluice-cluster"]["exact"]
            .as_str()
            .expect("cluster match");
        assert!(headers["x-sluice-rule"]["exact"].is_string());
        let dest = &route["route"][0]["destination"];
        // outbound|<port>|<subset>|<host> names exactly the destination.
        let expected = format!(
            "outbound|{}|{}|{}",
            dest["port"]["number"],
            dest["subset"].as_str().unwrap_or(""),
            dest["host"].as_str().unwrap()
        );
        assert_eq!(cluster, expected);
        let removed = route["headers"]["request"]["remove"]
            .as_array()
            .expect("remove");
        for h in sluice_core::wire::INTERNAL_HEADERS {
            assert!(removed.iter().any(|r| r == h), "{h} removed upstream");
        }
    }
    // Non-Istio circuitBreaker blocks are not passed to Istio.
    for doc in &files["resources.yaml"] {
        assert!(doc["spec"]["trafficPolicy"].get("circuitBreaker").is_none());
    }
}
