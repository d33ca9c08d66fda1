//! The JSON Schemas of the plugin configs (`sluice schema`, `docs/schemas/`): the checked-in
//! files are what the types generate, the serde attributes show in them, every plugin config
//! the builder emits for every example validates, and invalid configs are refused both by the
//! schema and by the filter's own parser/compiler. Regenerate the files with:
//!
//! ```sh
//! cargo run -p sluice -- schema --out docs/schemas
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sluice::emit::istio_target::IstioOptions;
use sluice::{Inputs, Options, Target, WasmModules};

const FILTERS: [&str; 4] = ["router", "canary", "fault", "breaker"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schema(filter: &str) -> Value {
    sluice::schema::schema(filter).unwrap_or_else(|| panic!("a schema for {filter}"))
}

fn validator(filter: &str) -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema(filter))
        .unwrap_or_else(|e| panic!("the {filter} schema compiles: {e}"))
}

/// The schema's errors for `config`, as `<path>: <message>` lines.
fn schema_errors(validator: &jsonschema::Validator, config: &Value) -> Vec<String> {
    validator
        .iter_errors(config)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Whether the filter itself accepts `config` (parse + compile with its own code).
fn filter_accepts(filter: &str, config: &Value) -> Result<(), String> {
    let bytes = serde_json::to_vec(config).expect("serializable");
    match filter {
        "router" => sluice_core::router::CompiledRouter::from_json(&bytes).map(drop),
        "canary" => sluice_core::canary::CompiledCanary::from_json(&bytes).map(drop),
        "fault" => sluice_core::fault::plan::FaultPlan::from_json(&bytes).map(drop),
        "breaker" => sluice_core::breaker::BreakerConfig::from_json(&bytes)
            .and_then(|c| c.compile().map(drop))
            .map_err(|e| e.to_string()),
        other => panic!("unknown filter {other}"),
    }
}

#[test]
fn checked_in_schemas_are_what_sluice_schema_writes() {
    let out = tempfile::tempdir().expect("tempdir");
    let run = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["schema", "--out"])
        .arg(out.path())
        .output()
        .expect("sluice runs");
    assert!(
        run.status.success(),
        "sluice schema --out failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let checked_in = repo().join("docs/schemas");
    let mut names: Vec<String> = std::fs::read_dir(&checked_in)
        .expect("docs/schemas exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // One per filter, and the suite's (tested in suite.rs).
    let mut expected: Vec<String> = sluice::schema::CONFIGS
        .iter()
        .map(|f| format!("sluice-{f}.schema.json"))
        .collect();
    expected.sort();
    assert_eq!(names, expected, "docs/schemas holds one schema per module");
    for name in &expected {
        let written = std::fs::read_to_string(out.path().join(name)).expect("written");
        let stored = std::fs::read_to_string(checked_in.join(name)).expect("checked in");
        assert!(
            written == stored,
            "docs/schemas/{name} is stale: run `cargo run -p sluice -- schema --out docs/schemas`"
        );
        let parsed: Value = serde_json::from_str(&stored).expect("the schema is JSON");
        assert_eq!(
            parsed["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}"
        );
    }
    // Printing one filter gives the same bytes as its file.
    let printed = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["schema", "fault"])
        .output()
        .expect("sluice runs");
    assert!(printed.status.success());
    assert_eq!(
        String::from_utf8(printed.stdout).expect("UTF-8"),
        std::fs::read_to_string(checked_in.join("sluice-fault.schema.json")).expect("read")
    );
    // An unknown filter is a usage error, and nothing is printed.
    let unknown = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["schema", "ratelimit"])
        .output()
        .expect("sluice runs");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(unknown.stdout.is_empty());
}

/// Every object schema in `schema` (the root and each `$defs` entry) that has properties.
fn object_schemas(schema: &Value) -> Vec<(String, &Value)> {
    let mut out = vec![("<root>".to_owned(), schema)];
    if let Some(defs) = schema["$defs"].as_object() {
        out.extend(defs.iter().map(|(k, v)| (k.clone(), v)));
    }
    out.retain(|(_, v)| v.get("properties").is_some());
    out
}

#[test]
fn serde_attributes_show_in_the_schemas() {
    for filter in FILTERS {
        let schema = schema(filter);
        // deny_unknown_fields on every config struct.
        for (name, def) in object_schemas(&schema) {
            assert_eq!(
                def["additionalProperties"], false,
                "{filter}: {name} must refuse unknown fields"
            );
        }
        assert_eq!(schema["title"], format!("sluice-{filter} plugin config"));
    }

    let router = schema("router");
    // rename_all = camelCase, rename = "match".
    assert!(router["properties"]["virtualHosts"].is_object());
    assert!(router["properties"].get("virtual_hosts").is_none());
    let rule = &router["$defs"]["Rule"];
    assert!(rule["properties"]["match"].is_object());
    assert_eq!(rule["required"], json!(["name", "route"]));
    // The externally tagged Destination: exactly one of {cluster} / {split}.
    let destination = &router["$defs"]["Destination"]["oneOf"];
    let tags: Vec<&Value> = destination
        .as_array()
        .expect("oneOf")
        .iter()
        .map(|v| &v["required"][0])
        .collect();
    assert_eq!(tags, [&json!("cluster"), &json!("split")]);
    // StringMatch is (try_from) its JSON shape: a oneof of exact / prefix / regex.
    let string_match = &router["$defs"]["StringMatch"];
    assert_eq!(string_match["maxProperties"], 1);
    let keys: Vec<&String> = string_match["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .collect();
    assert_eq!(keys, ["exact", "prefix", "regex"]);
    assert!(router["$defs"]["HttpMatchRequest"]["properties"]["ignoreUriCase"].is_object());

    // Defaults: a field with a default is optional and states it.
    let canary = schema("canary");
    let split = &canary["$defs"]["Split"];
    assert_eq!(split["properties"]["failover"]["default"], true);
    assert_eq!(split["required"], json!(["name", "members"]));
    assert_eq!(canary["properties"]["afterRouter"]["default"], false);
    let fault = schema("fault");
    assert_eq!(fault["properties"]["maxActiveFaults"]["default"], 1000);
    assert!(
        fault.get("required").is_none(),
        "every fault field has a default"
    );
    let breaker = schema("breaker");
    let settings = &breaker["$defs"]["BreakerSettings"]["properties"];
    assert_eq!(settings["interval"]["default"], "10s");
    assert_eq!(settings["countAs"]["default"], json!(["5xx"]));
    assert_eq!(settings["halfOpenProbes"]["default"], 1);
    // Unit enum with renamed variants: the strings the filter reads.
    let outcomes: Vec<&Value> = breaker["$defs"]["Outcome"]["oneOf"]
        .as_array()
        .expect("oneOf")
        .iter()
        .map(|v| &v["const"])
        .collect();
    assert_eq!(
        outcomes,
        [
            &json!("5xx"),
            &json!("gateway-error"),
            &json!("connect-failure"),
            &json!("reset"),
            &json!("timeout")
        ]
    );
}

/// Every example: input paths relative to the repository (each directory of `examples/`, and
/// each `examples/ecommerce/*.yaml` with the shared `common/`).
fn examples() -> Vec<Vec<PathBuf>> {
    let mut list = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir() && !p.ends_with("ecommerce"))
        .collect();
    dirs.sort();
    list.extend(dirs.into_iter().map(|d| vec![d]));
    let mut variants: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/ecommerce"))
        .expect("examples/ecommerce/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    variants.sort();
    let common = repo().join("examples/ecommerce/common");
    list.extend(variants.into_iter().map(|v| vec![common.clone(), v]));
    list
}

/// The plugin configs in an Envoy bootstrap: every wasm filter with a `sluice_<filter>` root_id.
fn envoy_plugin_configs(value: &Value, found: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            if let (Some(root_id), Some(config)) = (
                map.get("root_id").and_then(Value::as_str),
                map.get("configuration")
                    .and_then(|c| c.get("value"))
                    .and_then(Value::as_str),
            ) && let Some(filter) = root_id.strip_prefix("sluice_")
            {
                let config = serde_json::from_str(config)
                    .unwrap_or_else(|e| panic!("{root_id}: configuration.value is JSON: {e}"));
                found.push((filter.to_owned(), config));
            }
            map.values().for_each(|v| envoy_plugin_configs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| envoy_plugin_configs(v, found)),
        _ => {}
    }
}

fn documents(bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).expect("UTF-8");
    sluice::yaml::parse_documents(text)
        .expect("generated YAML parses")
        .into_iter()
        .map(|d| d.root.to_json())
        .collect()
}

/// `(filter, config)` of every plugin config the envoy and istio targets emit for `paths`.
fn emitted_configs(paths: &[PathBuf]) -> Vec<(String, Value)> {
    let inputs = Inputs::read(paths).expect("readable example");
    let mut found = Vec::new();
    let envoy = sluice::generate(
        &inputs,
        &Options {
            wasm: WasmModules::Reference("/opt/sluice/wasm".into()),
            ..Options::default()
        },
    )
    .unwrap_or_else(|d| panic!("{paths:?}: {d}"));
    for doc in documents(&envoy.files["envoy.yaml"]) {
        envoy_plugin_configs(&doc, &mut found);
    }
    let istio = sluice::generate(
        &inputs,
        &Options {
            target: Target::Istio(IstioOptions::default()),
            ..Options::default()
        },
    )
    .unwrap_or_else(|d| panic!("{paths:?}: {d}"));
    for plugin in documents(&istio.files["wasmplugins.yaml"]) {
        let name = plugin["metadata"]["name"].as_str().expect("a name");
        let filter = name.strip_prefix("sluice-").expect("sluice-<filter>");
        found.push((filter.to_owned(), plugin["spec"]["pluginConfig"].clone()));
    }
    found
}

#[test]
fn every_plugin_config_emitted_for_every_example_validates() {
    let validators: BTreeMap<&str, jsonschema::Validator> =
        FILTERS.iter().map(|f| (*f, validator(f))).collect();
    let mut per_filter: BTreeMap<String, usize> = BTreeMap::new();
    for paths in examples() {
        for (filter, config) in emitted_configs(&paths) {
            let validator = validators
                .get(filter.as_str())
                .unwrap_or_else(|| panic!("{paths:?}: no schema for filter {filter}"));
            let errors = schema_errors(validator, &config);
            assert!(
                errors.is_empty(),
                "{paths:?}: the {filter} config fails its schema:\n{}\n{config:#}",
                errors.join("\n")
            );
            *per_filter.entry(filter).or_default() += 1;
        }
    }
    // Every filter's config appears in some example, on both targets.
    for filter in FILTERS {
        let n = per_filter.get(filter).copied().unwrap_or(0);
        assert!(n >= 2, "only {n} {filter} configs checked: {per_filter:?}");
    }
}

/// Configs both the schema and the filter refuse: `(filter, why, config)`.
fn invalid_configs() -> Vec<(&'static str, &'static str, Value)> {
    let route = json!({"name": "r", "route": {"cluster": "c"}});
    let host =
        |rules: Value| json!({"virtualHosts": [{"name": "h", "domains": ["*"], "rules": rules}]});
    let split = |extra: Value| {
        let mut s = json!({"name": "s", "members": [{"cluster": "a", "weight": 1}]});
        s.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        json!({"splits": [s]})
    };
    let fault = |f: Value| {
        let mut rule = json!({"rule": "r"});
        rule.as_object_mut()
            .expect("object")
            .extend(f.as_object().expect("object").clone());
        json!({"faults": [rule]})
    };
    vec![
        ("router", "unknown root field", json!({"virtualHost": []})),
        ("router", "missing virtualHosts", json!({})),
        ("router", "no virtual host", json!({"virtualHosts": []})),
        (
            "router",
            "unknown field in a match",
            host(
                json!([{"name": "r", "match": [{"uri": {"exakt": "/"}}], "route": {"cluster": "c"}}]),
            ),
        ),
        (
            "router",
            "two kinds in one StringMatch",
            host(
                json!([{"name": "r", "match": [{"uri": {"exact": "/", "prefix": "/a"}}], "route": {"cluster": "c"}}]),
            ),
        ),
        (
            "router",
            "cluster and split in one route",
            host(json!([{"name": "r", "route": {"cluster": "c", "split": "s"}}])),
        ),
        (
            "router",
            "domains is not a list",
            json!({"virtualHosts": [{"name": "h", "domains": "*", "rules": [route]}]}),
        ),
        ("canary", "missing splits", json!({"afterRouter": true})),
        (
            "canary",
            "weight as a string",
            json!({"splits": [{"name": "s", "members": [{"cluster": "a", "weight": "10"}]}]}),
        ),
        (
            "canary",
            "negative weight",
            json!({"splits": [{"name": "s", "members": [{"cluster": "a", "weight": -1}]}]}),
        ),
        (
            "canary",
            "unknown sticky source",
            split(json!({"sticky": {"ip": true}})),
        ),
        (
            "canary",
            "hold without a unit",
            split(json!({"schedule": {"steps": [{"weights": [1], "hold": "30"}]}})),
        ),
        (
            "canary",
            "failover as a string",
            split(json!({"failover": "yes"})),
        ),
        (
            "fault",
            "unknown field in a delay",
            fault(
                json!({"delay": {"fixedDelay": "1s", "percentage": {"value": 5}, "jitter": "1s"}}),
            ),
        ),
        (
            "fault",
            "percentage over 100",
            fault(json!({"abort": {"httpStatus": 503, "percentage": {"value": 150}}})),
        ),
        (
            "fault",
            "HTTP status out of range",
            fault(json!({"abort": {"httpStatus": 700, "percentage": {"value": 5}}})),
        ),
        (
            "fault",
            "delay without a unit",
            fault(json!({"delay": {"fixedDelay": "5", "percentage": {"value": 5}}})),
        ),
        (
            "fault",
            "percentage as a bare number",
            fault(json!({"abort": {"httpStatus": 503, "percentage": 5}})),
        ),
        (
            "fault",
            "maxActiveFaults negative",
            json!({"maxActiveFaults": -1}),
        ),
        (
            "breaker",
            "unknown outcome",
            json!({"breakers": [{"cluster": "c", "consecutiveErrors": 5, "countAs": ["500"]}]}),
        ),
        (
            "breaker",
            "zero consecutive errors",
            json!({"breakers": [{"cluster": "c", "consecutiveErrors": 0}]}),
        ),
        (
            "breaker",
            "threshold over 100",
            json!({"breakers": [{"cluster": "c", "errorRatio": {"thresholdPercent": 101}}]}),
        ),
        (
            "breaker",
            "zero half-open probes",
            json!({"breakers": [{"cluster": "c", "consecutiveErrors": 5, "halfOpenProbes": 0}]}),
        ),
        (
            "breaker",
            "interval in seconds as a number",
            json!({"breakers": [{"cluster": "c", "consecutiveErrors": 5, "interval": 10}]}),
        ),
        (
            "breaker",
            "missing cluster",
            json!({"breakers": [{"consecutiveErrors": 5}]}),
        ),
        (
            "breaker",
            "misspelt default field",
            json!({"default": {"consecutiveError": 5}}),
        ),
    ]
}

#[test]
fn invalid_configs_are_refused_by_the_schema_and_by_the_filter() {
    for (filter, why, config) in invalid_configs() {
        let errors = schema_errors(&validator(filter), &config);
        assert!(
            !errors.is_empty(),
            "{filter} schema accepts a config with {why}: {config}"
        );
        assert!(
            filter_accepts(filter, &config).is_err(),
            "the {filter} filter accepts a config with {why} (schema says: {errors:?})"
        );
    }
}

#[test]
fn the_schema_accepts_what_the_filters_accept_at_the_bounds() {
    // Edge values the filters accept must not be refused by the schema's bounds.
    let valid = [
        (
            "router",
            json!({"virtualHosts": [{"name": "h", "domains": ["*"], "rules": [
                {"name": "r", "match": [{"uri": {}}, {"headers": {"x": {"regex": ".*"}}}], "route": {"split": "s"}}]}]}),
        ),
        ("canary", json!({"splits": []})),
        (
            "canary",
            json!({"splits": [{"name": "s", "members": [{"cluster": "a"}, {"cluster": "b", "weight": 0}],
                "sticky": {"sourceAddress": true, "setCookie": {"name": "pin", "ttl": "1h30m"}},
                "schedule": {"steps": [{"weights": [100, 0], "hold": "0.5s"}, {"weights": [0, 100], "hold": "0s"}]}}]}),
        ),
        ("fault", json!({})),
        (
            "fault",
            json!({"faults": [{"rule": "r",
                "delay": {"fixedDelay": "1ms", "percentage": {"value": 0}},
                "abort": {"httpStatus": 599, "percentage": {"value": 100}}},
                {"rule": "q", "delay": {"fixedDelay": "1m", "percent": 100},
                 "abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 0.0001}}}],
               "maxActiveFaults": 0, "headerFaults": {"trustedCidrs": ["127.0.0.1/32"], "maxDelay": "250ms"}}),
        ),
        (
            "breaker",
            json!({"afterRouter": true, "breakers": [{"cluster": "c", "consecutiveErrors": 1,
                "errorRatio": {"thresholdPercent": 100, "minRequestVolume": 1}, "halfOpenProbes": 1,
                "interval": "500ms", "baseEjectionTime": "1s", "maxEjectionTime": "1h",
                "countAs": ["5xx", "gateway-error", "connect-failure", "reset", "timeout"]}],
               "default": {"errorRatio": {"thresholdPercent": 1}}}),
        ),
    ];
    for (filter, config) in valid {
        filter_accepts(filter, &config)
            .unwrap_or_else(|e| panic!("the {filter} filter refuses {config}: {e}"));
        let errors = schema_errors(&validator(filter), &config);
        assert!(
            errors.is_empty(),
            "the {filter} schema refuses a valid config {config}: {errors:?}"
        );
    }
}

#[test]
fn the_duration_pattern_admits_every_duration_the_filters_parse() {
    let validator = validator("breaker");
    let with_interval =
        |d: &str| json!({"breakers": [{"cluster": "c", "consecutiveErrors": 1, "interval": d}]});
    for good in [
        "5s", "0.5s", "100ms", "250us", "250µs", "2m", "1h", "1m30s", " 10s ",
    ] {
        sluice_core::duration::parse(good)
            .unwrap_or_else(|e| panic!("{good:?} is a duration: {e}"));
        let errors = schema_errors(&validator, &with_interval(good));
        assert!(errors.is_empty(), "{good:?}: {errors:?}");
    }
    for bad in ["", "5", "5 s", "s", "5sec", "1d", "-1s", "1s 2s"] {
        assert!(
            sluice_core::duration::parse(bad).is_err(),
            "{bad:?} parses as a duration"
        );
        assert!(
            !schema_errors(&validator, &with_interval(bad)).is_empty(),
            "the schema admits {bad:?}"
        );
    }
}
