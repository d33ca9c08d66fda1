//! What the builder accepts: every YAML example of the seeds (kept in `tests/data/seeds/`), and
//! every field of Istio's own CRD schemas (the project's extract in `tests/data/istio/`), which
//! it either models or refuses as "not supported yet", never as an unknown field or with a type
//! error.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sluice::diag::Severity;
use sluice::{Inputs, parse, validate};

mod common;

#[test]
fn every_yaml_example_of_the_seeds_is_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seeds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the seeds' examples are in {}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 13, "seed examples: {files:?}");
    let mut resources = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable seed example");
        let name = file.display().to_string();
        let (parsed, mut diags) = parse::parse(&Inputs::from_text(&name, &text));
        diags.extend(validate::check_resources(&parsed));
        let errors: Vec<String> = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{name}:\n{}\n{text}", errors.join("\n"));
        resources += parsed.len();
    }
    assert!(
        resources >= 12,
        "found only {resources} Istio resources in the seeds"
    );
}

/// A document holding every property the schema defines, each with a value of its type.
fn maximal(schema: &Value, depth: usize) -> Value {
    if depth > 12 {
        return Value::Null;
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let mut obj = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    obj.insert(k.clone(), maximal(v, depth + 1));
                }
            }
            if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
                obj.insert("some-key".into(), maximal(extra, depth + 1));
            }
            Value::Object(obj)
        }
        Some("array") => json!([maximal(
            schema.get("items").unwrap_or(&Value::Null),
            depth + 1
        )]),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("string") => {
            let enums = schema.get("enum").and_then(Value::as_array);
            enums
                .and_then(|e| e.first().cloned())
                .unwrap_or_else(|| json!("x"))
        }
        _ => Value::Null,
    }
}

#[test]
fn every_istio_crd_field_is_modelled_or_refused_as_not_supported() {
    let mut checked = Vec::new();
    for ((api_version, kind), schema) in common::crd_schemas() {
        if !parse::Kind::ALL.iter().any(|k| k.as_str() == kind) {
            continue;
        }
        let schema = &schema["properties"]["spec"];
        let document = json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": "everything"},
            "spec": maximal(schema, 0),
        });
        // JSON is YAML: feed it through the real input path, positions and all.
        let input = serde_json::to_string_pretty(&document).expect("serializable");
        let (parsed, diags) = parse::parse(&Inputs::from_text(&kind, &input));
        let wrong: Vec<String> = diags
            .iter()
            .filter(|d| !d.message.contains("is not supported yet"))
            .map(ToString::to_string)
            .collect();
        assert!(
            wrong.is_empty(),
            "{kind} {api_version}:\n{}",
            wrong.join("\n")
        );
        assert_eq!(parsed.len(), 1, "{kind}: {diags:?}");
        checked.push(kind.clone());
    }
    checked.sort();
    checked.dedup();
    assert_eq!(checked.len(), 6, "kinds checked: {checked:?}");
}
