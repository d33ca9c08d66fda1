//! sluice's regex engine against Envoy's: every pattern below is both a `safe_regex` header
//! matcher of a real Envoy 1.40 (RE2, what Istio's `regex` compiles to) and a
//! `sluice_core::regex::Regex`, and every value gets the same answer from both.
//!
//! The patterns come from the grammar of the engine's differential test against regex-lite
//! (filters/core/tests/regex_oracle/grammar.rs), non-ASCII ones included, plus the cases where
//! the engine follows RE2 rather than regex-lite and the byte semantics this test found: Envoy
//! runs RE2 in Latin-1 mode, one character per byte (`.` does not match `é`, `a.` matches
//! `a\xFF`). Envoy refuses a whole config with a pattern RE2 rejects, so starting Envoy also
//! shows that RE2 accepts every pattern the engine accepts.
//!
//! One route per pattern: `x-case: <index>` selects it, `x-value` is matched by the pattern,
//! and a match answers 200 from the route itself (no upstream); no match falls through to 404.

use serde_json::{Value, json};
use sluice_core::regex::Regex;
use sluice_integration::bootstrap::{Bootstrap, LISTENER_NAME};
use sluice_integration::client::{self, Request};
use sluice_integration::envoy::Envoy;

#[path = "../../filters/core/tests/regex_oracle/grammar.rs"]
mod grammar;

/// One pattern, how it is compiled, and the values to try (bytes: a header value may be any
/// bytes but controls).
struct Case {
    pattern: String,
    ignore_case: bool,
    values: Vec<Vec<u8>>,
}

/// The patterns where RE2 and regex-lite part ways and the engine follows RE2 (see
/// filters/core/src/regex/mod.rs), each with values that tell the readings apart.
fn deliberate_differences() -> Vec<Case> {
    let case = |pattern: &str, ignore_case: bool, values: &[&str]| Case {
        pattern: pattern.into(),
        ignore_case,
        values: values.iter().map(|v| v.as_bytes().to_vec()).collect(),
    };
    vec![
        case("a{", false, &["a{", "a", "a{{"]),
        case("a{,3}", false, &["a{,3}", "aaa", "a"]),
        case("x{099}", false, &["x{099}", "xx"]),
        case("a{ 2}", false, &["a{ 2}", "aa"]),
        case("(?)a", false, &["a", "(?)a"]),
        case(r"\Q.*+\E+", false, &[".*+", ".*++", "ab"]),
        case(r"a\0?", false, &["a"]),
        case(r"\<a\>", false, &["<a>", "a"]),
        case(r"[\<]", false, &["<", "\\"]),
        case("[[]", false, &["[", "]"]),
        case("[a[b]+", false, &["a[b", "ab]"]),
        case("[a&&b]+", false, &["a&&b", "&"]),
        case(r"[\w-.]+", false, &["a-.", "-", "a"]),
        case("[--z]+", false, &["-z", "m", "+"]),
        case("a(?i)*", false, &["", "aaa", "AA"]),
        case("(?i)[[:^upper:]]", false, &["a", "A", "1"]),
        case("(?i)[^[:upper:]]", false, &["a", "A", "1"]),
        case(r"\b{start}a", false, &["{start}a", "a"]),
        // RE2's `\s` is `[\t\n\f\r ]`; a header cannot carry `\v` to show its absence.
        case(r"a\sb", false, &["a b", "a\tb", "ab"]),
    ]
}

/// Characters are bytes (Latin-1), in patterns and in values, as Envoy's RE2 reads them.
fn byte_semantics() -> Vec<Case> {
    let values: Vec<Vec<u8>> = [
        "é".as_bytes(),
        "É".as_bytes(),
        "éé".as_bytes(),
        "€".as_bytes(),
        b"\xe9",
        b"\xc9",
        b"\xff",
        b"a\xff",
        b"\xc3\xa9\xa9",
        b"a",
    ]
    .iter()
    .map(|v| v.to_vec())
    .collect();
    [
        (".", false),
        ("..", false),
        ("...", false),
        ("a.", false),
        ("é", false),
        ("é+", false),
        ("(?:é)+", false),
        ("[é]{2}", false),
        (r"\x{e9}", false),
        (r"\xe9", true),
        (r"\351", false),
        (r"\xff", false),
        ("[^a]", false),
        ("[^a]+", false),
        (r"[\x{80}-\x{ff}]+", false),
        (r"\W+", false),
        ("[[:^alpha:]]{2}", false),
        ("(?i)é", false),
        (r"(?i)[\xe0-\xe9]", false),
    ]
    .into_iter()
    .map(|(pattern, ignore_case)| Case {
        pattern: pattern.into(),
        ignore_case,
        values: values.clone(),
    })
    .collect()
}

/// Generated patterns (fixed seed, non-empty: Envoy's proto validation wants one character)
/// with values a header can carry: no newline, and no space at either end (the HTTP/1 codec
/// trims it), plus one value of random non-control bytes per pattern.
fn generated(count: usize) -> Vec<Case> {
    let mut rng = grammar::Rng(0x5EED_E770_7E6E);
    let mut cases = Vec::new();
    while cases.len() < count {
        let pattern = grammar::pattern(&mut rng);
        let ignore_case = rng.below(4) == 0;
        // Envoy's proto validation wants a non-empty regex.
        if pattern.is_empty() || Regex::new(&pattern, ignore_case).is_err() {
            continue;
        }
        let mut values: Vec<Vec<u8>> = (0..30)
            .map(|_| grammar::haystack(&mut rng))
            .filter(|v| !v.contains('\n') && v.trim_matches(' ') == v)
            .map(String::into_bytes)
            .take(12)
            .collect();
        let random: Vec<u8> = (0..rng.below(4))
            .map(|_| match rng.below(2) {
                0 => b'!' + rng.below(94) as u8,
                _ => 0x80 + rng.below(128) as u8,
            })
            .collect();
        values.push(random);
        cases.push(Case {
            pattern,
            ignore_case,
            values,
        });
    }
    cases
}

/// The pattern as Envoy gets it: case-insensitivity is a leading `(?i)` there.
fn envoy_pattern(case: &Case) -> String {
    if case.ignore_case {
        format!("(?i){}", case.pattern)
    } else {
        case.pattern.clone()
    }
}

fn route(index: usize, case: &Case) -> Value {
    json!({
        "match": {"prefix": "/", "headers": [
            {"name": "x-case", "string_match": {"exact": index.to_string()}},
            {"name": "x-value", "string_match": {"safe_regex": {"regex": envoy_pattern(case)}}},
        ]},
        "direct_response": {"status": 200},
    })
}

/// Starts Envoy with one route per case, asks it about every value, and returns every
/// disagreement with the engine.
fn disagreements(cases: &[Case]) -> Vec<String> {
    let mut routes: Vec<Value> = cases.iter().enumerate().map(|(i, c)| route(i, c)).collect();
    routes.push(json!({"match": {"prefix": "/"}, "direct_response": {"status": 404}}));
    let mut bootstrap = Bootstrap::new()
        .routes_json(routes)
        .without_access_log()
        .to_json();
    // Envoy refuses RE2 programs above 100 instructions by default; the engine has its own
    // size limit, and this test compares meanings, not limits.
    bootstrap["layered_runtime"] = json!({"layers": [{"name": "static", "static_layer": {
        "re2.max_program_size.error_level": 1_000_000,
        "re2.max_program_size.warn_level": 1_000_000,
    }}]});
    let config = serde_json::to_string_pretty(&bootstrap).unwrap_or_else(|e| panic!("{e}"));
    let envoy = Envoy::start(&config).unwrap_or_else(|e| panic!("{e:#}"));
    let port = envoy.listener_port(LISTENER_NAME);

    let mut asked = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let regex = Regex::new(&case.pattern, case.ignore_case)
            .unwrap_or_else(|e| panic!("{:?}: {e}", case.pattern));
        for value in &case.values {
            let request = Request::get(port, "/")
                .header("x-case", index.to_string())
                .header("x-value", value);
            asked.push((index, value, regex.is_match(value), request));
        }
    }
    let requests = asked.iter().map(|(.., request)| request.clone()).collect();
    let responses = client::send_many(requests, client::DEFAULT_PARALLELISM);
    let mut differences = Vec::new();
    for ((index, value, ours, _), response) in asked.iter().zip(responses) {
        let response = response.unwrap_or_else(|e| panic!("case {index}: {e:#}"));
        let envoys = match response.status {
            200 => true,
            404 => false,
            other => panic!("case {index}: status {other}\n{}", envoy.log()),
        };
        if envoys != *ours {
            let case = &cases[*index];
            differences.push(format!(
                "{:?} (ignore_case {}) on {:?}: Envoy {envoys}, sluice {ours}",
                case.pattern,
                case.ignore_case,
                String::from_utf8_lossy(value),
            ));
        }
    }
    differences
}

#[test]
fn generated_patterns_match_as_in_envoy() {
    let cases = generated(400);
    let compared: usize = cases.iter().map(|c| c.values.len()).sum();
    assert!(compared > 4_000, "only {compared} values");
    let differences = disagreements(&cases);
    assert!(
        differences.is_empty(),
        "{} of {compared} differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

#[test]
fn deliberate_differences_from_regex_lite_are_what_envoy_does() {
    let cases = deliberate_differences();
    for case in &cases {
        if let Err(e) = Regex::new(&case.pattern, case.ignore_case) {
            panic!("{:?} should compile: {e}", case.pattern);
        }
    }
    let differences = disagreements(&cases);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
fn characters_are_bytes_as_in_envoy() {
    let cases = byte_semantics();
    let differences = disagreements(&cases);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
