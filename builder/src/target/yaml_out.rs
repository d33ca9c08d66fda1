//! A small deterministic YAML writer for JSON values: block style, keys in map order (sorted,
//! since serde_json's map is a BTreeMap here), strings quoted unless unambiguous. Written by
//! hand because the output must be byte-stable across versions and readable when checked in.

use serde_json::Value;

/// Renders `value` as a YAML document (with a trailing newline).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Map entries in output order: `@type`, then `name`, then the rest sorted, so each object
/// starts with what identifies it.
fn ordered(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let rank = |k: &str| match k {
        "@type" => 0,
        "name" => 1,
        _ => 2,
    };
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| (rank(a.0), a.0).cmp(&(rank(b.0), b.0)));
    entries
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, level: usize) {
    for (k, v) in ordered(map) {
        indent(out, level);
        out.push_str(&string_text(k));
        out.push(':');
        write_value_after_key(out, v, level);
    }
}

fn write_seq(out: &mut String, items: &[Value], level: usize) {
    for v in items {
        indent(out, level);
        out.push('-');
        match v {
            Value::Object(map) if !map.is_empty() => {
                // First key on the dash line, the rest aligned under it.
                let mut first = true;
                for (k, child) in ordered(map) {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        indent(out, level + 2);
                    }
                    out.push_str(&string_text(k));
                    out.push(':');
                    write_value_after_key(out, child, level + 2);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(out, inner, level + 2);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

fn write_value_after_key(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, level + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, level);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_text(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// Plain when it cannot be read as anything but this string, double-quoted (JSON escapes, which
/// YAML double-quoted scalars share) otherwise.
fn string_text(s: &str) -> String {
    let plain_safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b))
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'/' || b == b'_')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain_safe {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_block_yaml_that_parses_back() {
        let v = json!({
            "a": {"b": [1, {"c": "x", "d": [true, null]}, [2, 3]], "e": {}},
            "@type": "type.googleapis.com/x",
            "s": "yes", "t": "10", "u": "outbound|80||a", "w": "line\nbreak", "z": []
        });
        let text = to_yaml(&v);
        let back = crate::input::yaml::parse_documents(&text).unwrap();
        assert_eq!(back[0].root.to_json(), v, "{text}");
        assert!(
            text.starts_with("\"@type\": type.googleapis.com/x\n"),
            "{text}"
        );
    }
}
