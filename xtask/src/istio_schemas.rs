//! `cargo xtask istio-schemas --crds FILE`: the project's extract of Istio's CRD schemas, the
//! oracle the builder's tests check inputs and emitted manifests against.
//!
//! The tests must stand on the repository's own files, so they read
//! `builder/tests/data/istio/crd-schemas.json`, made by this command from Istio's generated
//! CRD bundle (`kubernetes/customresourcedefinitions.gen.yaml` of istio/api). It keeps, for each
//! kind and version the tests need, the schema's structure only: types, properties, items,
//! enums, required, formats and the `x-kubernetes-*` rules. Every `description` is dropped, so
//! the facts of the schema carry over and Istio's prose does not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

/// Where the extract lives in the repository.
pub const OUTPUT: &str = "builder/tests/data/istio/crd-schemas.json";

/// The kinds whose schemas the tests read: the builder's inputs and the manifests it emits.
pub const KINDS: [&str; 8] = [
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
    "WorkloadEntry",
    "WorkloadGroup",
    "EnvoyFilter",
    "WasmPlugin",
];

/// The istio/api commit of the bundle in use today (the project's shared folder names it).
pub const DEFAULT_COMMIT: &str = "b8f8791d9653b2edc77a071d48887e582cfe84bf";

/// Reads the CRD bundle at `crds` and writes the extract to `<repo>/OUTPUT`.
pub fn write(crds: &Path, commit: &str) -> Result<PathBuf> {
    let text = std::fs::read_to_string(crds).with_context(|| format!("read {}", crds.display()))?;
    let extract = extract(&text, commit)?;
    let path = crate::repo_root().join(OUTPUT);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    }
    let mut rendered = serde_json::to_string_pretty(&extract)?;
    rendered.push('\n');
    std::fs::write(&path, rendered).with_context(|| format!("write {}", path.display()))?;
    let count = extract["schemas"].as_object().map_or(0, Map::len);
    println!("wrote {} ({count} schemas)", path.display());
    Ok(path)
}

/// The extract of the bundle `text`: provenance, then `"<group>/<version> <Kind>"` -> the
/// version's `openAPIV3Schema` without descriptions.
pub fn extract(text: &str, commit: &str) -> Result<Value> {
    let documents = sluice::yaml::parse_documents(text)
        .map_err(|e| anyhow::anyhow!("the CRD bundle does not parse: {e:?}"))?;
    let mut schemas = BTreeMap::new();
    for document in documents {
        let crd = document.root.to_json();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        if !KINDS.contains(&kind) {
            continue;
        }
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
            let name = version["name"].as_str().unwrap_or_default();
            let mut schema = version["schema"]["openAPIV3Schema"].clone();
            if schema.is_null() {
                bail!("{group}/{name} {kind} has no openAPIV3Schema");
            }
            strip_prose(&mut schema);
            schemas.insert(format!("{group}/{name} {kind}"), schema);
        }
    }
    let found: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|kind| schemas.keys().any(|key| key.ends_with(&format!(" {kind}"))))
        .collect();
    if found.len() != KINDS.len() {
        bail!("the bundle lacks some kinds: found only {found:?} of {KINDS:?}");
    }
    Ok(json!({
        "source": {
            "repository": "https://github.com/istio/api",
            "path": "kubernetes/customresourcedefinitions.gen.yaml",
            "commit": commit,
            "license": "Apache-2.0",
        },
        "note": "Structure only (every description removed); regenerate with `cargo xtask istio-schemas --crds <bundle> --commit <sha>`.",
        "schemas": schemas,
    }))
}

/// Removes every `description` keyword of a schema, keeping properties that happen to be named
/// `description` (keys of a `properties` map are field names, not keywords).
fn strip_prose(schema: &mut Value) {
    let Value::Object(map) = schema else {
        if let Value::Array(items) = schema {
            items.iter_mut().for_each(strip_prose);
        }
        return;
    };
    map.remove("description");
    for (key, value) in map.iter_mut() {
        match (key.as_str(), value) {
            ("properties" | "patternProperties", Value::Object(fields)) => {
                fields.values_mut().for_each(strip_prose);
            }
            // Values, not schemas: leave them as they are.
            ("enum" | "default" | "example" | "required", _) => {}
            (_, value) => strip_prose(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_go_and_a_property_named_description_stays() {
        let mut schema = json!({
            "description": "prose",
            "type": "object",
            "properties": {
                "description": {"type": "string", "description": "more prose"},
                "list": {"type": "array", "items": {"type": "string", "description": "x"}},
            },
            "x-kubernetes-validations": [{"rule": "self.a > 0", "message": "a must be positive"}],
        });
        strip_prose(&mut schema);
        assert_eq!(
            schema,
            json!({
                "type": "object",
                "properties": {
                    "description": {"type": "string"},
                    "list": {"type": "array", "items": {"type": "string"}},
                },
                "x-kubernetes-validations": [{"rule": "self.a > 0", "message": "a must be positive"}],
            })
        );
    }

    /// The checked-in extract is the one this code makes: no description anywhere, every kind
    /// the tests need, and the provenance header.
    #[test]
    fn the_checked_in_extract_holds_structure_only() {
        let path = crate::repo_root().join(OUTPUT);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (cargo xtask istio-schemas)", path.display()));
        let extract: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(extract["source"]["license"], "Apache-2.0");
        let schemas = extract["schemas"].as_object().expect("schemas");
        for kind in KINDS {
            assert!(
                schemas.keys().any(|k| k.ends_with(&format!(" {kind}"))),
                "no {kind} in {}",
                path.display()
            );
        }
        let mut copy = Value::Object(schemas.clone());
        strip_prose(&mut copy);
        assert_eq!(&copy, &extract["schemas"], "descriptions remain");
    }
}
