//! Helpers the builder's test files share (`mod common;`): generation with the reference wasm
//! location, the diagnostics of a mesh that must not generate, a slice of the emitted YAML and the
//! meshes shared with the integration tests (`integration/fixtures/`).

// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use sluice::{Inputs, Options, WasmModules, generate};

/// The options of the snapshot tests: modules referenced at `/opt/sluice/wasm`, the rest default.
pub fn options() -> Options {
    Options {
        wasm: WasmModules::Reference("/opt/sluice/wasm".into()),
        ..Options::default()
    }
}

/// The `envoy.yaml` generated from `text` (as file `mesh.yaml`) with [`options`]; panics with
/// the diagnostics when it does not generate.
pub fn envoy_yaml(text: &str) -> String {
    let output = generate(&Inputs::from_text("mesh.yaml", text), &options())
        .unwrap_or_else(|d| panic!("{d}"));
    String::from_utf8(output.files["envoy.yaml"].clone()).expect("UTF-8")
}

/// The errors of `text` (as file `mesh.yaml`) with [`options`]; panics when it generates.
pub fn diagnose(text: &str) -> String {
    match generate(&Inputs::from_text("mesh.yaml", text), &options()) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.to_string(),
    }
}

/// The lines of `yaml` from the first containing `from` through the first after it containing
/// `to` (to the end when none does): snapshots stay on the feature.
pub fn section(yaml: &str, from: &str, to: &str) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains(from))
        .unwrap_or_else(|| panic!("no {from:?} in\n{yaml}"));
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.contains(to))
        .map_or(lines.len(), |i| start + 2 + i);
    lines[start..end].join("\n")
}

/// The text of `integration/fixtures/<name>` (the meshes a builder test shares with the
/// integration test that runs them through Envoy) with each `${KEY}` of `vars` replaced by its
/// value. Panics when the file is missing or a `${` is left unreplaced.
pub fn fixture(name: &str, vars: &[(&str, &str)]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../integration/fixtures")
        .join(name);
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    for (key, value) in vars {
        text = text.replace(&format!("${{{key}}}"), value);
    }
    assert!(
        !text.contains("${"),
        "fixture {name}: a ${{...}} is left unreplaced by {vars:?}"
    );
    text
}

/// Istio's CRD schemas as the project keeps them (`builder/tests/data/istio/crd-schemas.json`,
/// made by `cargo xtask istio-schemas` from Istio's bundle: structure only, no prose):
/// `(apiVersion, kind)` -> that version's openAPIV3Schema.
pub fn crd_schemas() -> std::collections::BTreeMap<(String, String), serde_json::Value> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/istio/crd-schemas.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("Istio's CRD schemas are in {}: {e}", path.display()));
    let extract: serde_json::Value = serde_json::from_str(&text).expect("the extract is JSON");
    let schemas = extract["schemas"].as_object().expect("a schemas object");
    schemas
        .iter()
        .map(|(key, schema)| {
            let (api_version, kind) = key.split_once(' ').expect("`<apiVersion> <Kind>` keys");
            ((api_version.to_owned(), kind.to_owned()), schema.clone())
        })
        .collect()
}

/// The openAPIV3Schema of `api_version` `kind`, made a JSON Schema (see [`to_json_schema`]).
pub fn crd_json_schema(api_version: &str, kind: &str) -> serde_json::Value {
    let schema = crd_schemas()
        .remove(&(api_version.to_owned(), kind.to_owned()))
        .unwrap_or_else(|| panic!("no CRD schema for {api_version} {kind}"));
    to_json_schema(schema)
}

/// Kubernetes structural schemas are OpenAPI: `nullable` has no JSON-schema meaning and
/// `format: string`/`int32` are annotations; `x-kubernetes-*` keys are ignored by the validator.
pub fn to_json_schema(mut schema: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("nullable");
                map.remove("format");
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut schema);
    schema
}

/// Each generated file parsed as YAML documents (JSON values), by file name.
pub fn documents(
    output: &sluice::Output,
) -> std::collections::BTreeMap<String, Vec<serde_json::Value>> {
    output
        .files
        .iter()
        .filter(|(name, _)| name.ends_with(".yaml"))
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

/// Validates every document of `files` against the openAPIV3Schema of its kind and version
/// (plus the WasmPlugin CEL rules the validator cannot run); returns how many were checked.
pub fn assert_schema_valid(
    files: &std::collections::BTreeMap<String, Vec<serde_json::Value>>,
) -> usize {
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
                    ["oci://", "file://", "http://", "https://"]
                        .iter()
                        .any(|scheme| url.starts_with(scheme)),
                    "url scheme (CEL rule: one of http, https, file, oci): {url}"
                );
            }
            checked += 1;
        }
    }
    checked
}
