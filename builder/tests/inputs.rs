//! What the builder accepts: every YAML example of the seeds, and every field of Istio's own
//! CRD schemas (`../shared/istio/customresourcedefinitions.gen.yaml`), which it either models
//! or refuses as "not supported yet", never as an unknown field or with a type error.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sluice::diag::Severity;
use sluice::{Inputs, parse, validate};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find("```yaml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed code block");
        blocks.push(body[..end].to_owned());
        rest = &body[end..][3..];
    }
    blocks
}

#[test]
fn every_yaml_example_of_the_seeds_is_accepted() {
    let dir = shared().join("seeds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the seeds are in {}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut resources = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable seed");
        for (i, block) in yaml_blocks(&text).into_iter().enumerate() {
            if !block.contains("networking.istio.io") {
                continue; // e.g. the Kubernetes Deployment in a kubectl heredoc
            }
            let name = format!("{}#{i}", file.display());
            let (parsed, mut diags) = parse::parse(&Inputs::from_text(&name, &block));
            diags.extend(validate::check_resources(&parsed));
            let errors: Vec<String> = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(ToString::to_string)
                .collect();
            assert!(errors.is_empty(), "{name}:\n{}\n{block}", errors.join("\n"));
            resources += parsed.len();
        }
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
    let path = shared().join("istio/customresourcedefinitions.gen.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("Istio's CRDs are in {}: {e}", path.display()));
    let docs = sluice::yaml::parse_documents(&text).expect("the CRD bundle parses");
    let mut checked = Vec::new();
    for doc in docs {
        let crd = doc.root.to_json();
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !parse::Kind::ALL.iter().any(|k| k.as_str() == kind) {
            continue;
        }
        for version in crd["spec"]["versions"].as_array().expect("versions") {
            let schema = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
            let document = json!({
                "apiVersion": format!("networking.istio.io/{}", version["name"].as_str().expect("name")),
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
                "{kind} {}:\n{}",
                version["name"],
                wrong.join("\n")
            );
            assert_eq!(parsed.len(), 1, "{kind}: {diags:?}");
            checked.push(kind.clone());
        }
    }
    checked.dedup();
    assert_eq!(checked.len(), 5, "kinds checked: {checked:?}");
}
