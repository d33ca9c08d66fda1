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
use common::{assert_schema_valid, crd_schemas, documents, to_json_schema};

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
    documents(&output)
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

/// `--attach envoyfilter`: every example gives one EnvoyFilter valid against Istio's schema,
/// with one INSERT_BEFORE-router patch per filter and context, in chain order, and the same
/// VirtualServices as the WasmPlugin attachment.
#[test]
fn envoy_filters_validate_and_insert_the_chain_before_the_router() {
    use sluice::emit::istio_target::Attach;
    for suite in [false, true] {
        let options = IstioOptions {
            attach: Attach::EnvoyFilter,
            source: ModuleSource::File("/var/lib/sluice/wasm".into()),
            ..IstioOptions::default()
        };
        let paths: Vec<PathBuf> = ["demo"]
            .iter()
            .map(|p| repo().join("examples").join(p))
            .collect();
        let inputs = Inputs::read(&paths).expect("readable example");
        let generate_with = |istio: IstioOptions| {
            sluice::generate(
                &inputs,
                &Options {
                    target: Target::Istio(istio),
                    suite,
                    ..Options::default()
                },
            )
            .unwrap_or_else(|d| panic!("{d}"))
        };
        let output = generate_with(options);
        let files = documents(&output);
        assert!(!files.contains_key("wasmplugins.yaml"));
        assert_schema_valid(&files);
        let filter = &files["envoyfilters.yaml"][0];
        assert_eq!(filter["kind"], "EnvoyFilter");
        let patches = filter["spec"]["configPatches"].as_array().expect("patches");
        let expected: Vec<&str> = if suite {
            vec!["sluice-suite"]
        } else {
            vec![
                "sluice-router",
                "sluice-canary",
                "sluice-fault",
                "sluice-breaker",
            ]
        };
        for context in ["SIDECAR_OUTBOUND", "GATEWAY"] {
            let names: Vec<&str> = patches
                .iter()
                .filter(|p| p["match"]["context"] == context)
                .map(|p| p["patch"]["value"]["name"].as_str().unwrap_or_default())
                .collect();
            assert_eq!(names, expected, "{context}");
        }
        for patch in patches {
            assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE");
            let config = &patch["patch"]["value"]["typed_config"]["config"];
            assert_eq!(config["vm_config"]["vm_id"], "sluice");
            assert_eq!(config["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
            assert_eq!(config["failure_policy"], "FAIL_CLOSED");
            let file = config["vm_config"]["code"]["local"]["filename"]
                .as_str()
                .unwrap_or_default();
            assert!(file.starts_with("/var/lib/sluice/wasm/sluice_"), "{file}");
        }
        // The routing contract is the WasmPlugin attachment's: the same rewritten VirtualServices.
        let plugins = generate_with(IstioOptions {
            source: ModuleSource::File("/var/lib/sluice/wasm".into()),
            ..IstioOptions::default()
        });
        assert_eq!(
            output.files["virtualservices.yaml"],
            plugins.files["virtualservices.yaml"]
        );
    }
}

/// Envoy fetches remote code through a cluster and checks its sha256: the http source names
/// both; an OCI source cannot be expressed in an EnvoyFilter.
#[test]
fn envoy_filter_remote_code_and_the_sources_it_cannot_take() {
    use sluice::emit::istio_target::Attach;
    let inputs = Inputs::read(&[repo().join("examples/demo")]).expect("readable example");
    let mut sha256 = BTreeMap::new();
    for filter in ["router", "canary", "fault", "breaker"] {
        sha256.insert(filter.to_owned(), "ab".repeat(32));
    }
    let remote = IstioOptions {
        attach: Attach::EnvoyFilter,
        source: ModuleSource::Http("https://downloads.example.com/sluice".into()),
        module_cluster: Some("outbound|443||downloads.example.com".into()),
        sha256: sha256.clone(),
        ..IstioOptions::default()
    };
    let output = sluice::generate(
        &inputs,
        &Options {
            target: Target::Istio(remote.clone()),
            ..Options::default()
        },
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let text = String::from_utf8_lossy(&output.files["envoyfilters.yaml"]).into_owned();
    let doc = sluice::yaml::parse_documents(&text).expect("YAML")[0]
        .root
        .to_json();
    let code = &doc["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]["vm_config"]
        ["code"]["remote"];
    assert_eq!(
        code["http_uri"]["uri"],
        "https://downloads.example.com/sluice/sluice_router.wasm"
    );
    assert_eq!(
        code["http_uri"]["cluster"],
        "outbound|443||downloads.example.com"
    );
    assert_eq!(code["sha256"], "ab".repeat(32));
    for (options, says) in [
        (
            IstioOptions {
                attach: Attach::EnvoyFilter,
                ..IstioOptions::default()
            },
            "cannot load an OCI image",
        ),
        (
            IstioOptions {
                module_cluster: None,
                ..remote.clone()
            },
            "needs --module-cluster",
        ),
        (
            IstioOptions {
                sha256: BTreeMap::new(),
                ..remote
            },
            "needs the sha256",
        ),
    ] {
        let err = sluice::generate(
            &inputs,
            &Options {
                target: Target::Istio(options),
                ..Options::default()
            },
        )
        .expect_err("refused")
        .to_string();
        assert!(err.contains(says), "{err}");
    }
}

/// The istio target is written from a resource set (the mesh as one proxy sees it, all HTTP
/// listeners merged): each WasmPlugin's `pluginConfig` is that set's filter config, and the
/// EnvoyFilter carries the set's `envoy.filters.http.wasm` configs as they are, but for the
/// code the proxies load.
#[test]
fn wasm_plugins_and_envoy_filters_are_written_from_the_mesh_wide_resource_set() {
    use sluice::emit::istio_target::Attach;
    let inputs = Inputs::read(&[repo().join("examples/demo")]).expect("readable example");
    for suite in [false, true] {
        let options = |attach| Options {
            target: Target::Istio(IstioOptions {
                attach,
                source: ModuleSource::File("/var/lib/sluice/wasm".into()),
                ..IstioOptions::default()
            }),
            suite,
            ..Options::default()
        };
        let modelled =
            sluice::model(&inputs, &options(Attach::WasmPlugin)).unwrap_or_else(|d| panic!("{d}"));
        let mesh = &modelled.mesh;
        let set = sluice::xds::resources::mesh_wide(
            &mesh.merged_listener(),
            mesh,
            &options(Attach::WasmPlugin),
        )
        .expect("the merged configs compile");
        let filters = set.filter_configs();
        assert!(!filters.is_empty());
        assert!(filters.iter().all(|f| f.listener == "mesh"), "{filters:?}");

        let plugins = documents(
            &sluice::generate(&inputs, &options(Attach::WasmPlugin))
                .unwrap_or_else(|d| panic!("{d}")),
        );
        let plugin_configs: BTreeMap<String, Value> = plugins["wasmplugins.yaml"]
            .iter()
            .map(|p| {
                let name = p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                (name, p["spec"]["pluginConfig"].clone())
            })
            .collect();
        let from_set: BTreeMap<String, Value> = filters
            .iter()
            .map(|f| {
                let config: Value = serde_json::from_str(f.plugin_config()).expect("JSON");
                (format!("sluice-{}", f.module), config)
            })
            .collect();
        assert_eq!(plugin_configs, from_set, "suite: {suite}");

        let envoy_filters = documents(
            &sluice::generate(&inputs, &options(Attach::EnvoyFilter))
                .unwrap_or_else(|d| panic!("{d}")),
        );
        for patch in envoy_filters["envoyfilters.yaml"][0]["spec"]["configPatches"]
            .as_array()
            .expect("patches")
        {
            let value = &patch["patch"]["value"];
            let name = value["name"].as_str().unwrap_or_default();
            let filter = filters
                .iter()
                .find(|f| format!("sluice-{}", f.module) == name)
                .unwrap_or_else(|| panic!("{name} is in the set"));
            let mut expected = filter.typed_config.clone();
            expected["config"]["vm_config"]["code"] = serde_json::json!({"local": {
                "filename": format!("/var/lib/sluice/wasm/sluice_{}.wasm", filter.module),
            }});
            assert_eq!(value["typed_config"], expected, "{name}");
        }
    }
}
