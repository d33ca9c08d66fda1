//! Golden snapshots per stage for every example mesh of `examples/`: the model
//! ([`sluice::model`], as JSON) and the Envoy resource set ([`sluice::resources`], each
//! resource's name and body, by kind). A change of the builder shows which stage moved: a model
//! snapshot that changes is a change of resolution, a resource snapshot alone a change of
//! translation. (The checked-in `envoy-configs/` are the envoy target's output: tests/examples.rs.)
//!
//! Review and accept changes with `cargo insta review` (or `INSTA_UPDATE=always`).

use std::path::PathBuf;

use serde_json::{Value, json};
use sluice::{Inputs, Options, WasmModules};

/// Every example: snapshot name -> inputs, relative to this crate (so file names in the model
/// are the same on every machine).
fn examples() -> Vec<(String, Vec<PathBuf>)> {
    let mut list: Vec<(String, Vec<PathBuf>)> = [
        "bookinfo",
        "demo",
        "locality",
        "native-tcp",
        "native-traffic",
    ]
    .iter()
    .map(|e| {
        (
            (*e).to_owned(),
            vec![PathBuf::from(format!("../examples/{e}"))],
        )
    })
    .collect();
    let mut variants: Vec<String> = std::fs::read_dir("../examples/ecommerce")
        .expect("examples/ecommerce exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            p.file_stem()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    variants.sort();
    for v in variants {
        list.push((
            format!("ecommerce-{v}"),
            vec![
                "../examples/ecommerce/common".into(),
                format!("../examples/ecommerce/{v}.yaml").into(),
            ],
        ));
    }
    list
}

/// The options of tests/examples.rs (the checked-in configs): modules referenced, the
/// `locality` example for a proxy in `us-east/zone-a`.
fn options_for(example: &str) -> Options {
    Options {
        wasm: WasmModules::Reference("target/wasm32-wasip1/release".into()),
        locality: (example == "locality")
            .then(|| sluice::locality::Locality::parse("us-east/zone-a").expect("a locality")),
        ..Options::default()
    }
}

/// The resource set as JSON: per kind, each resource's name and body; the modules and node.
fn resource_set_json(set: &sluice::xds::ResourceSet) -> Value {
    let kinds: serde_json::Map<String, Value> = set
        .resources
        .iter()
        .map(|(kind, resources)| {
            let list: Vec<Value> = resources
                .iter()
                .map(|r| json!({"name": r.name, "body": *r.body}))
                .collect();
            (format!("{kind:?}"), Value::Array(list))
        })
        .collect();
    json!({"resources": kinds, "modules": set.modules, "node": set.node})
}

#[test]
fn every_example_has_a_model_and_a_resource_set_snapshot() {
    let list = examples();
    assert!(list.len() >= 6, "{list:?}");
    for (name, inputs) in list {
        let inputs = Inputs::read(&inputs).expect("readable example");
        let options = options_for(&name);
        let modelled = sluice::model(&inputs, &options).unwrap_or_else(|d| panic!("{name}: {d}"));
        let model = serde_json::to_string_pretty(&modelled.mesh).expect("the model serializes");
        insta::assert_snapshot!(format!("model-{name}"), model);
        let (set, _) =
            sluice::resources(&inputs, &options).unwrap_or_else(|d| panic!("{name}: {d}"));
        let set = serde_json::to_string_pretty(&resource_set_json(&set)).expect("JSON");
        insta::assert_snapshot!(format!("xds-{name}"), set);
    }
}
