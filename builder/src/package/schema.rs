//! JSON Schemas (draft 2020-12) of the plugin configs of the four filters and of the suite
//! module (whose config nests the four), generated from the very types the modules deserialize
//! (`sluice_core`'s `schema` feature derives them), so they cannot drift from what they accept.
//!
//! The serde attributes carry over: camelCase names, `deny_unknown_fields` as
//! `"additionalProperties": false`, `#[serde(default)]` fields optional with their `default`,
//! externally tagged enums (the router's `route`) as `oneOf`, and `StringMatch`'s JSON shape
//! (at most one of `exact` / `prefix` / `regex`). A few bounds the filters check when they
//! compile a config are stated too (duration syntax, percentages, HTTP status, breaker
//! minimums); the schema accepts a superset of the valid configs, never less: the filters'
//! `on_configure` stays the final word.
//!
//! `sluice schema --out docs/schemas` writes `sluice-<filter>.schema.json`; editors validate a
//! WasmPlugin's `pluginConfig` or an Envoy `configuration.value` with them.

use std::path::{Path, PathBuf};

use schemars::generate::SchemaSettings;
use serde_json::Value;

/// The filters with a plugin config, in chain order (same as [`crate::xds::filters::FILTERS`]).
pub const FILTERS: [&str; 4] = crate::xds::filters::FILTERS;

/// Every module with a schema: the four filters, then the suite (`sluice-suite.schema.json`).
pub const CONFIGS: [&str; 5] = crate::xds::filters::MODULES;

/// The schema file name of `filter`: `sluice-<filter>.schema.json`.
pub fn file_name(filter: &str) -> String {
    format!("sluice-{filter}.schema.json")
}

/// The JSON Schema of `filter`'s plugin config, or `None` for an unknown filter name.
pub fn schema(filter: &str) -> Option<Value> {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = match filter {
        "router" => generator.root_schema_for::<sluice_core::router::RouterConfig>(),
        "canary" => generator.root_schema_for::<sluice_core::canary::config::CanaryConfig>(),
        "fault" => generator.root_schema_for::<sluice_core::fault::config::FaultConfig>(),
        "breaker" => generator.root_schema_for::<sluice_core::breaker::BreakerConfig>(),
        "suite" => generator.root_schema_for::<sluice_core::suite::SuiteConfig>(),
        _ => return None,
    };
    schema.insert(
        "title".into(),
        format!("sluice-{filter} plugin config").into(),
    );
    // The type's own doc comment says what it is; this adds where the JSON goes.
    let doc = schema
        .get("description")
        .and_then(Value::as_str)
        .map(|d| format!("{d}\n\n"))
        .unwrap_or_default();
    schema.insert(
        "description".into(),
        format!(
            "{doc}The JSON of the `configuration.value` of an Envoy wasm filter running \
             sluice_{filter}.wasm (root_id `sluice_{filter}`), or the `pluginConfig` of an Istio \
             WasmPlugin."
        )
        .into(),
    );
    Some(schema.to_value())
}

/// A schema as written to disk: pretty JSON ending with a newline (stable, diff-friendly).
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

/// `(file name, contents)` of every module's schema.
pub fn files() -> Vec<(String, String)> {
    CONFIGS
        .iter()
        .filter_map(|f| Some((file_name(f), render(&schema(f)?))))
        .collect()
}

/// Writes every module's schema into `dir` (created if missing); returns the paths written.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    files()
        .into_iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        })
        .collect()
}
