//! Machine-readable forms of [`Diagnostics`]: `--format json` and `--format sarif`.
//!
//! The text form is [`Diagnostics`]' own (`Display`, [`Diagnostics::render`]).

use serde_json::{Value, json};

use crate::diag::{Code, Diagnostic, Diagnostics, Severity};

/// `{"diagnostics": [{code, severity, file, line, column, resource, path, message, hint}],
/// "summary": {"errors": N, "warnings": M}}`. `resource`, `path` and `hint` are `null` when the
/// diagnostic has none (a YAML syntax error names no resource; the root has no path).
pub fn json(diags: &Diagnostics) -> Value {
    let list: Vec<Value> = diags
        .0
        .iter()
        .map(|d| {
            json!({
                "code": d.code.as_str(),
                "severity": d.severity.as_str(),
                "file": d.file,
                "line": d.pos.line,
                "column": d.pos.col,
                "resource": non_empty(&d.resource),
                "path": path(d),
                "message": d.message,
                "hint": d.hint,
            })
        })
        .collect();
    json!({
        "diagnostics": list,
        "summary": {
            "errors": diags.errors().count(),
            "warnings": diags.warnings().count(),
        },
    })
}

/// A SARIF 2.1.0 log with one run: tool `sluice` with one rule per code used (its
/// `shortDescription` from [`Code::summary`]), one result per diagnostic with `ruleId`,
/// `level`, the file and position as a physical location, the resource and field path as a
/// logical location, and `resource`, `path`, `hint` again in the result's `properties`.
pub fn sarif(diags: &Diagnostics) -> Value {
    let mut codes: Vec<Code> = diags.0.iter().map(|d| d.code).collect();
    codes.sort();
    codes.dedup();
    let rules: Vec<Value> = codes
        .iter()
        .map(|c| {
            json!({
                "id": c.as_str(),
                "name": format!("{c:?}"),
                "shortDescription": {"text": c.summary()},
                "defaultConfiguration": {"level": level(default_severity(*c))},
            })
        })
        .collect();
    let results: Vec<Value> = diags
        .0
        .iter()
        .map(|d| {
            let rule_index = codes.iter().position(|c| *c == d.code).unwrap_or(0);
            let mut location = serde_json::Map::new();
            // `<output>` (emission) is no file: such results carry no physical location.
            if !d.file.starts_with('<') {
                let mut physical = json!({"artifactLocation": {"uri": uri(&d.file)}});
                if d.pos.line > 0 {
                    physical["region"] = json!({
                        "startLine": d.pos.line,
                        "startColumn": d.pos.col.max(1),
                    });
                }
                location.insert("physicalLocation".into(), physical);
            }
            if !d.resource.is_empty() {
                let name = path(d).unwrap_or_default();
                let fully = if name.is_empty() {
                    d.resource.clone()
                } else {
                    format!("{}: {name}", d.resource)
                };
                location.insert(
                    "logicalLocations".into(),
                    json!([{"name": d.resource, "fullyQualifiedName": fully, "kind": "object"}]),
                );
            }
            let mut result = json!({
                "ruleId": d.code.as_str(),
                "ruleIndex": rule_index,
                "level": level(d.severity),
                "message": {"text": d.message},
                "properties": {
                    "resource": non_empty(&d.resource),
                    "path": path(d),
                    "hint": d.hint,
                },
            });
            if !location.is_empty() {
                result["locations"] = json!([location]);
            }
            result
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "sluice",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn path(d: &Diagnostic) -> Option<String> {
    (!d.path.is_root()).then(|| d.path.to_string())
}

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

/// The severity a code is documented with: SL9xx are warnings (see docs/DIAGNOSTICS.md).
fn default_severity(code: Code) -> Severity {
    if code.as_str().starts_with("SL9") {
        Severity::Warning
    } else if code.as_str().starts_with("SL8") {
        Severity::Note
    } else {
        Severity::Error
    }
}

/// A file name as a relative URI reference: `/` separators kept, anything outside RFC 3986's
/// unreserved characters percent-encoded (a space, `#`, `?` would otherwise change its meaning).
fn uri(file: &str) -> String {
    let mut out = String::with_capacity(file.len());
    for byte in file.replace('\\', "/").bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_escaped() {
        assert_eq!(uri("mesh/a b#1.yaml"), "mesh/a%20b%231.yaml");
        assert_eq!(uri("/abs/x.yaml"), "/abs/x.yaml");
    }
}
