//! `--suite`: the one `sluice-suite` filter in place of the chain `sluice-router ->
//! sluice-canary -> sluice-fault -> sluice-breaker`, on every target that emits filters.
//!
//! - the envoy target's `--suite` config for a mesh with a header rule, faults, a 90/10 split
//!   and breakers (insta snapshot);
//! - for every example, the suite layout differs from the chain only in its sluice filters, and
//!   the suite's config nests exactly the chain's four configs (so both layouts decide alike),
//!   accepted by the suite's own compiler and by `docs/schemas/sluice-suite.schema.json`;
//! - istio: one WasmPlugin `sluice-suite`, valid against Istio's CRD schema, the other manifests
//!   unchanged; compose: only `sluice_suite.wasm` is mounted;
//! - `sluice build --suite` builds and OCI-packages `sluice_suite.wasm` alone.
//!
//! That Envoy runs these configs and behaves as the chain does is shown through a real Envoy in
//! `integration/tests/generated_suite.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sluice::emit::istio_target::IstioOptions;
use sluice::{Inputs, Options, Target, WasmModules};
use sluice_core::suite::SuiteConfig;

mod common;

/// The four chain filters' Envoy names, in chain order.
const CHAIN: [&str; 4] = [
    "sluice-router",
    "sluice-canary",
    "sluice-fault",
    "sluice-breaker",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `shop` v1/v2 with a header rule, two faulty rules, a sticky 90/10 split and breakers on
/// both subsets: every section of the suite config in use (the mesh of
/// `integration/tests/chain.rs`, on fixed addresses).
const SHOP: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop}
spec:
  hosts: [shop]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: shop
  annotations:
    sluice.dev/breaker: |
      consecutiveErrors: 10
      baseEjectionTime: 120s
      subsets:
        v2: {consecutiveErrors: 3}
spec:
  host: shop
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
  annotations:
    sluice.dev/canary: |
      rollout:
        sticky: {header: end-user}
spec:
  hosts: [shop]
  http:
  - name: testers
    match: [{headers: {x-tester: {exact: 'yes'}}}]
    route: [{destination: {host: shop, subset: v2}}]
  - name: broken
    match: [{headers: {x-fault: {exact: abort}}}]
    fault: {abort: {httpStatus: 555, percentage: {value: 100}}}
    route: [{destination: {host: shop, subset: v1}}]
  - name: slow
    match: [{headers: {x-fault: {exact: delay}}}]
    fault: {delay: {fixedDelay: 1500ms, percentage: {value: 100}}}
    route: [{destination: {host: shop, subset: v1}}]
  - name: rollout
    route:
    - {destination: {host: shop, subset: v1}, weight: 90}
    - {destination: {host: shop, subset: v2}, weight: 10}
";

fn options(target: Target, suite: bool) -> Options {
    Options {
        target,
        wasm: WasmModules::Reference("/opt/sluice/wasm".into()),
        suite,
        ..Options::default()
    }
}

fn generate(inputs: &Inputs, options: &Options) -> BTreeMap<String, Vec<u8>> {
    sluice::generate(inputs, options)
        .unwrap_or_else(|d| panic!("{d}"))
        .files
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

fn documents(bytes: &[u8]) -> Vec<Value> {
    sluice::yaml::parse_documents(&text(bytes))
        .expect("generated YAML parses")
        .into_iter()
        .map(|d| d.root.to_json())
        .collect()
}

/// Every example input: each `examples/<dir>/`, each `examples/ecommerce/*.yaml` with `common/`,
/// and [`SHOP`].
fn examples() -> Vec<(String, Inputs)> {
    let mut list = vec![("shop".to_owned(), Inputs::from_text("shop.yaml", SHOP))];
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir() && !p.ends_with("ecommerce"))
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.display().to_string();
        list.push((name, Inputs::read(&[dir]).expect("readable example")));
    }
    let mut variants: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/ecommerce"))
        .expect("examples/ecommerce/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    variants.sort();
    let common = repo().join("examples/ecommerce/common");
    for variant in variants {
        let name = variant.display().to_string();
        let inputs = Inputs::read(&[common.clone(), variant]).expect("readable example");
        list.push((name, inputs));
    }
    list
}

/// Each HTTP listener's `http_filters` of an Envoy bootstrap, by listener name (TCP listeners,
/// whose chains run `tcp_proxy`, have none and carry no sluice filter in either layout).
fn http_filters(bootstrap: &mut Value) -> Vec<(String, &mut Vec<Value>)> {
    bootstrap["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners")
        .iter_mut()
        .filter_map(|listener| {
            let name = listener["name"].as_str().expect("a name").to_owned();
            let filters = listener["filter_chains"][0]["filters"][0]["typed_config"]
                .get_mut("http_filters")?
                .as_array_mut()
                .expect("http_filters is a list");
            Some((name, filters))
        })
        .collect()
}

/// The JSON plugin config of a sluice wasm filter.
fn plugin_config(filter: &Value) -> Value {
    let value = filter["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .expect("configuration.value");
    serde_json::from_str(value).expect("the plugin config is JSON")
}

#[test]
fn suite_config_for_a_mesh_with_routing_faults_a_split_and_breakers() {
    let files = generate(
        &Inputs::from_text("shop.yaml", SHOP),
        &options(Target::Envoy, true),
    );
    insta::assert_snapshot!(text(&files["envoy.yaml"]));
}

#[test]
fn the_suite_replaces_exactly_the_chain_and_nests_its_four_configs() {
    let validator =
        jsonschema::draft202012::new(&sluice::schema::schema("suite").expect("a suite schema"))
            .expect("the suite schema compiles");
    let mut sections_seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (example, inputs) in examples() {
        let chain = generate(&inputs, &options(Target::Envoy, false));
        let suite = generate(&inputs, &options(Target::Envoy, true));
        let mut chain = documents(&chain["envoy.yaml"]).remove(0);
        let mut suite = documents(&suite["envoy.yaml"]).remove(0);
        for ((listener, chain_filters), (_, suite_filters)) in http_filters(&mut chain)
            .into_iter()
            .zip(http_filters(&mut suite))
        {
            // The chain's sluice filters, which must come first and in order.
            let sluice_count = chain_filters
                .iter()
                .take_while(|f| CHAIN.contains(&f["name"].as_str().unwrap_or_default()))
                .count();
            let mut expected = json!({});
            for filter in chain_filters.drain(..sluice_count) {
                let name = filter["name"].as_str().expect("a name");
                let section = name.trim_start_matches("sluice-");
                expected[section] = plugin_config(&filter);
                *sections_seen
                    .entry(CHAIN.iter().find(|c| **c == name).expect("chain"))
                    .or_default() += 1;
            }
            assert!(
                expected.get("router").is_some(),
                "{example} {listener}: the chain starts with the router"
            );
            let first = suite_filters.remove(0);
            assert_eq!(first["name"], "sluice-suite", "{example} {listener}");
            let config = first["typed_config"]["config"].clone();
            assert_eq!(config["root_id"], "sluice_suite");
            assert_eq!(config["vm_config"]["vm_id"], "sluice");
            assert_eq!(
                config["vm_config"]["code"]["local"]["filename"],
                "/opt/sluice/wasm/sluice_suite.wasm"
            );
            assert_eq!(config["failure_policy"], "FAIL_CLOSED");
            let nested = plugin_config(&first);
            assert_eq!(
                nested, expected,
                "{example} {listener}: the suite nests the chain's configs"
            );
            let errors: Vec<String> = validator
                .iter_errors(&nested)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{example}: {errors:?}");
            let bytes = serde_json::to_vec(&nested).expect("serializable");
            SuiteConfig::from_json(&bytes)
                .and_then(|c| c.compile().map(drop))
                .unwrap_or_else(|e| panic!("{example} {listener}: the suite refuses: {e}"));
        }
        // With the sluice filters taken out, the two bootstraps are the same: routes, clusters,
        // native filters, listeners.
        assert_eq!(chain, suite, "{example}: only the sluice filters differ");
    }
    for filter in CHAIN {
        assert!(
            sections_seen.get(filter).copied().unwrap_or(0) >= 2,
            "the examples exercise {filter} too rarely: {sections_seen:?}"
        );
    }
}

#[test]
fn istio_target_writes_one_schema_valid_wasm_plugin_and_the_same_routes() {
    let inputs = Inputs::read(&[repo().join("examples/demo")]).expect("readable example");
    let mut sha256 = BTreeMap::new();
    sha256.insert("suite".to_owned(), "cd".repeat(32));
    let istio = IstioOptions {
        sha256,
        ..IstioOptions::default()
    };
    let chain = generate(&inputs, &options(Target::Istio(istio.clone()), false));
    let suite = generate(&inputs, &options(Target::Istio(istio), true));
    assert_eq!(
        chain.keys().collect::<Vec<_>>(),
        suite.keys().collect::<Vec<_>>()
    );
    for file in ["virtualservices.yaml", "resources.yaml"] {
        assert_eq!(
            text(&chain[file]),
            text(&suite[file]),
            "{file} is layout-independent"
        );
    }
    let plugins = documents(&suite["wasmplugins.yaml"]);
    assert_eq!(plugins.len(), 1, "one WasmPlugin: {plugins:#?}");
    let plugin = &plugins[0];
    let validator = jsonschema::validator_for(&common::crd_json_schema(
        plugin["apiVersion"].as_str().expect("apiVersion"),
        "WasmPlugin",
    ))
    .expect("the CRD schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(plugin)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{plugin:#}");
    assert_eq!(plugin["metadata"]["name"], "sluice-suite");
    let spec = &plugin["spec"];
    assert_eq!(
        spec["url"],
        format!(
            "oci://{}/sluice-suite:{}",
            sluice::emit::istio_target::DEFAULT_REGISTRY,
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(spec["pluginName"], "sluice_suite");
    assert_eq!(spec["sha256"], "cd".repeat(32));
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    assert_eq!(spec["phase"], "STATS");
    // The pluginConfig nests the four per-filter plugins' configs.
    let mut expected = json!({});
    for plugin in documents(&chain["wasmplugins.yaml"]) {
        let name = plugin["metadata"]["name"].as_str().expect("a name");
        expected[name.trim_start_matches("sluice-")] = plugin["spec"]["pluginConfig"].clone();
    }
    for section in ["router", "canary", "fault", "breaker"] {
        assert!(
            expected.get(section).is_some(),
            "the demo uses the {section}"
        );
    }
    assert_eq!(spec["pluginConfig"], expected);
}

#[test]
fn compose_target_mounts_only_the_suite_module() {
    let modules = tempfile::tempdir().expect("tempdir");
    for module in sluice::emit::envoy::MODULES {
        std::fs::write(
            modules.path().join(format!("sluice_{module}.wasm")),
            format!("\0asm-{module}"),
        )
        .expect("write");
    }
    let inputs = Inputs::read(&[repo().join("examples/demo")]).expect("readable example");
    let compose = |suite| {
        let options = Options {
            target: Target::Compose,
            wasm: WasmModules::Reference(modules.path().into()),
            suite,
            ..Options::default()
        };
        generate(&inputs, &options)
    };
    let (chain, suite) = (compose(false), compose(true));
    let wasm = |files: &BTreeMap<String, Vec<u8>>| {
        files
            .keys()
            .filter(|k| k.starts_with("wasm/"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        wasm(&chain),
        [
            "wasm/sluice_breaker.wasm",
            "wasm/sluice_canary.wasm",
            "wasm/sluice_fault.wasm",
            "wasm/sluice_router.wasm"
        ]
    );
    assert_eq!(wasm(&suite), ["wasm/sluice_suite.wasm"]);
    assert_eq!(suite["wasm/sluice_suite.wasm"], b"\0asm-suite");
    let envoy = text(&suite["envoy.yaml"]);
    assert!(
        envoy.contains("filename: /etc/sluice/wasm/sluice_suite.wasm"),
        "{envoy}"
    );
    assert!(!envoy.contains("sluice_router.wasm"), "{envoy}");
    // The compose project itself does not depend on the layout.
    assert_eq!(
        text(&chain["docker-compose.yml"]),
        text(&suite["docker-compose.yml"])
    );
}

#[test]
fn a_missing_suite_module_fails_with_the_command_that_builds_it() {
    let empty = tempfile::tempdir().expect("tempdir");
    let options = Options {
        wasm: WasmModules::Bundle {
            from: empty.path().into(),
            module_dir: sluice::DEFAULT_MODULE_DIR.into(),
        },
        suite: true,
        ..Options::default()
    };
    let inputs = Inputs::read(&[repo().join("examples/demo")]).expect("readable example");
    let err = sluice::generate(&inputs, &options)
        .expect_err("no module")
        .to_string();
    assert!(
        err.contains("sluice_suite.wasm")
            && err.contains("cargo build --release --target wasm32-wasip1 -p sluice-suite"),
        "{err}"
    );
    assert!(
        !err.contains("sluice_router.wasm"),
        "only the suite is needed: {err}"
    );
}

#[test]
fn sluice_build_suite_packages_the_suite_module_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let modules = tmp.path().join("modules");
    std::fs::create_dir(&modules).expect("mkdir");
    let wasm = b"\0asm\x01\0\0\0suite".to_vec();
    std::fs::write(modules.join("sluice_suite.wasm"), &wasm).expect("write");
    let (out, oci) = (tmp.path().join("out"), tmp.path().join("oci"));
    let run = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["build", "--suite", "--no-wasm-opt", "--tag", "1.0.0"])
        .arg("--modules")
        .arg(&modules)
        .arg("--out-dir")
        .arg(&out)
        .arg("--oci")
        .arg(&oci)
        .output()
        .expect("sluice runs");
    let stdout = text(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // No chain module was needed, and only the suite was written.
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .expect("out dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, [sluice::output::MARKER, "sluice_suite.wasm"]);
    assert_eq!(
        std::fs::read(out.join("sluice_suite.wasm")).expect("read"),
        wasm
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).expect("index.json"))
            .expect("JSON");
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "{index:#}");
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        "sluice-suite-1.0.0"
    );
    // The same digest `sluice generate --target istio --suite` pins for this module.
    let layout = sluice::oci::image_layout(
        &[sluice::oci::Module {
            name: "sluice-suite",
            wasm: &wasm,
        }],
        "1.0.0",
    )
    .expect("packs");
    assert_eq!(manifests[0]["digest"], layout.images[0].manifest_digest);
    assert!(stdout.contains("sluice_suite.wasm"), "{stdout}");
    assert!(stdout.contains(&sluice::oci::sha256_hex(&wasm)), "{stdout}");
}

#[test]
fn generate_help_explains_the_trade() {
    let run = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["generate", "--help"])
        .output()
        .expect("sluice runs");
    let help = text(&run.stdout);
    assert!(run.status.success());
    for needle in [
        "--suite",
        "sluice-suite",
        "once per callback",
        "BENCHMARKS.md",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
}

#[test]
fn the_suite_schema_and_the_suite_refuse_the_same_broken_configs() {
    let files = generate(
        &Inputs::from_text("shop.yaml", SHOP),
        &options(Target::Envoy, true),
    );
    let mut bootstrap = documents(&files["envoy.yaml"]).remove(0);
    let valid = plugin_config(&http_filters(&mut bootstrap)[0].1[0]);
    let validator =
        jsonschema::draft202012::new(&sluice::schema::schema("suite").expect("a suite schema"))
            .expect("the suite schema compiles");
    type Breaks = fn(&mut Value);
    let broken: [(&str, Breaks); 3] = [
        ("no router section", |c| {
            c.as_object_mut().expect("object").remove("router");
        }),
        ("an unknown section", |c| c["ratelimit"] = json!({})),
        ("an HTTP status above 599", |c| {
            c["fault"]["faults"][0]["abort"]["httpStatus"] = json!(700);
        }),
    ];
    for (why, breaks) in broken {
        let mut config = valid.clone();
        breaks(&mut config);
        assert!(
            !validator.is_valid(&config),
            "the schema accepts {why}: {config:#}"
        );
        let bytes = serde_json::to_vec(&config).expect("serializable");
        assert!(
            SuiteConfig::from_json(&bytes)
                .and_then(|c| c.compile().map(drop))
                .is_err(),
            "the suite accepts {why}"
        );
    }
    assert!(validator.is_valid(&valid));
}
