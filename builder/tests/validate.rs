//! `sluice validate` and the diagnostics options shared with `generate` (`--format`,
//! `--fail-on`, `--color`), run as the real binary on the files in tests/data/validate/.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sluice() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    // The tests decide about colour themselves; a developer's NO_COLOR must not change them.
    command.env_remove("NO_COLOR");
    command
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/validate")
        .join(name)
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn stderr(run: &Output) -> String {
    String::from_utf8_lossy(&run.stderr).into_owned()
}

fn stdout_json(run: &Output) -> serde_json::Value {
    serde_json::from_slice(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}",
            String::from_utf8_lossy(&run.stdout)
        )
    })
}

/// Every path under `dir`, relative, with its size: enough to see that nothing was written.
fn listing(dir: &Path) -> BTreeSet<(PathBuf, u64)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable") {
            let path = entry.expect("entry").path();
            let meta = std::fs::metadata(&path).expect("metadata");
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let rel = path.strip_prefix(dir).expect("inside").to_path_buf();
            out.insert((rel, meta.len()));
        }
    }
    out
}

#[test]
fn validate_accepts_bookinfo_and_writes_nothing() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let examples = repo("examples/bookinfo");
    let before = listing(&examples);
    for target in ["envoy", "istio", "compose"] {
        let run = sluice()
            .current_dir(cwd.path())
            .args(["validate", "-f"])
            .arg(&examples)
            .args(["--target", target])
            // No module anywhere: validation must not need (or read) them.
            .env("SLUICE_WASM_DIR", cwd.path().join("no-modules-here"))
            .output()
            .expect("runs");
        assert_eq!(run.status.code(), Some(0), "{target}: {}", stderr(&run));
        assert!(
            stderr(&run).ends_with("validate: 0 errors, 0 warnings\n"),
            "{target}: {}",
            stderr(&run)
        );
        assert!(run.stdout.is_empty(), "text goes to stderr only");
    }
    assert!(
        listing(cwd.path()).is_empty(),
        "the working directory is untouched"
    );
    assert_eq!(
        listing(&examples),
        before,
        "the input directory is untouched"
    );
}

#[test]
fn validate_lists_every_error_in_text() {
    let run = sluice()
        .args(["validate", "-f"])
        .arg(data("broken.yaml"))
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(1));
    let text = stderr(&run);
    for expected in [
        ":22:7: error[SL202]: VirtualService/reviews: spec.http[0].route[0].weight: weight -5 is negative\n  hint: ",
        ":23:21: error[SL301]: VirtualService/reviews: spec.http[0].route[1].destination.host: unknown destination host \"reviewz\"",
        ":25:5: error[SL201]: VirtualService/reviews: spec.http[1]: missing `route`",
        ":25:5: error[SL501]: VirtualService/reviews: spec.http[1].delegate: `delegate` is not supported yet",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(text.ends_with("validate: 4 errors, 0 warnings\n"), "{text}");
    assert!(!text.contains('\x1b'), "no colour in a pipe:\n{text:?}");
}

#[test]
fn validate_lists_every_error_in_json() {
    let run = sluice()
        .args(["validate", "--format", "json", "-f"])
        .arg(data("broken.yaml"))
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(1));
    let doc = stdout_json(&run);
    assert_eq!(doc["summary"]["errors"], 4);
    assert_eq!(doc["summary"]["warnings"], 0);
    let list = doc["diagnostics"].as_array().expect("a list");
    let codes: Vec<&str> = list.iter().filter_map(|d| d["code"].as_str()).collect();
    assert_eq!(codes, ["SL202", "SL301", "SL201", "SL501"]);
    let first = &list[0];
    assert_eq!(first["severity"], "error");
    assert!(
        first["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("broken.yaml"))
    );
    assert_eq!(first["line"], 22);
    assert_eq!(first["column"], 7);
    assert_eq!(first["resource"], "VirtualService/reviews");
    assert_eq!(first["path"], "spec.http[0].route[0].weight");
    assert_eq!(first["message"], "weight -5 is negative");
    assert_eq!(
        first["hint"],
        "weights are non-negative; they are shares of the total"
    );
    for d in list {
        let keys: BTreeSet<&str> = d
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "code", "severity", "file", "line", "column", "resource", "path", "message", "hint"
            ])
        );
    }
    assert!(stderr(&run).is_empty(), "json: nothing on stderr");
}

fn sarif_validator() -> jsonschema::Validator {
    let schema_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sarif/sarif-schema-2.1.0.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).expect("schema")).expect("json");
    jsonschema::validator_for(&schema).expect("a valid schema")
}

fn assert_valid_sarif(doc: &serde_json::Value) {
    let validator = sarif_validator();
    // The schema does bite: a level SARIF does not define is refused.
    let mut wrong = doc.clone();
    wrong["runs"][0]["results"] = serde_json::json!([{"message": {"text": "x"}, "level": "fatal"}]);
    assert!(
        !validator.is_valid(&wrong),
        "the schema must refuse level: fatal"
    );
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "not SARIF 2.1.0: {errors:#?}\n{doc:#}");
}

#[test]
fn validate_lists_every_error_in_sarif_valid_against_the_schema() {
    let run = sluice()
        .args(["validate", "--format", "sarif", "-f"])
        .arg(data("broken.yaml"))
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(1));
    let doc = stdout_json(&run);
    assert_valid_sarif(&doc);
    assert_eq!(doc["version"], "2.1.0");
    let runs = doc["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1);
    let driver = &runs[0]["tool"]["driver"];
    assert_eq!(driver["name"], "sluice");
    let rules: Vec<&str> = driver["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(
        rules,
        ["SL201", "SL202", "SL301", "SL501"],
        "one rule per code used"
    );
    assert!(
        driver["rules"][0]["shortDescription"]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let results = runs[0]["results"].as_array().expect("results");
    assert_eq!(results.len(), 4);
    let first = &results[0];
    assert_eq!(first["ruleId"], "SL202");
    assert_eq!(first["level"], "error");
    assert_eq!(first["message"]["text"], "weight -5 is negative");
    let location = &first["locations"][0];
    assert!(
        location["physicalLocation"]["artifactLocation"]["uri"]
            .as_str()
            .is_some_and(|u| u.ends_with("broken.yaml"))
    );
    assert_eq!(location["physicalLocation"]["region"]["startLine"], 22);
    assert_eq!(location["physicalLocation"]["region"]["startColumn"], 7);
    assert_eq!(
        location["logicalLocations"][0]["fullyQualifiedName"],
        "VirtualService/reviews: spec.http[0].route[0].weight"
    );
    assert_eq!(first["properties"]["path"], "spec.http[0].route[0].weight");
}

#[test]
fn sarif_of_a_clean_run_and_of_warnings_is_valid_too() {
    for (input, level) in [
        (repo("examples/bookinfo"), None),
        (data("warnings.yaml"), Some("warning")),
    ] {
        let run = sluice()
            .args(["validate", "--format", "sarif", "-f"])
            .arg(&input)
            .output()
            .expect("runs");
        let doc = stdout_json(&run);
        assert_valid_sarif(&doc);
        let results = doc["runs"][0]["results"].as_array().expect("results");
        match level {
            None => assert!(results.is_empty(), "{doc:#}"),
            Some(level) => assert!(results.iter().all(|r| r["level"] == level), "{doc:#}"),
        }
    }
}

#[test]
fn fail_on_warning_fails_a_warning_only_mesh() {
    let file = data("warnings.yaml");
    let run = sluice()
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(0), "warnings alone pass by default");
    assert!(
        stderr(&run).contains(": warning[SL901]: DestinationRule/ratings: "),
        "{}",
        stderr(&run)
    );
    assert!(stderr(&run).ends_with("validate: 0 errors, 2 warnings\n"));

    let run = sluice()
        .args(["validate", "--fail-on", "warning", "-f"])
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));

    // generate: the same threshold, and then nothing is written.
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let run = sluice()
        .args([
            "generate",
            "--fail-on",
            "warning",
            "--wasm-dir",
            "/opt/wasm",
            "-f",
        ])
        .arg(&file)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(
        stderr(&run).ends_with("0 errors, 2 warnings; nothing was written\n"),
        "{}",
        stderr(&run)
    );
    assert!(!out.exists(), "nothing written");

    let run = sluice()
        .args(["generate", "--wasm-dir", "/opt/wasm", "-f"])
        .arg(&file)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(out.join("envoy.yaml").is_file());
}

#[test]
fn usage_and_io_errors_exit_2() {
    let run = sluice()
        .args(["validate", "-f", "/nonexistent/sluice-mesh.yaml"])
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    let run = sluice()
        .args(["validate", "--format", "xml", "-f"])
        .arg(data("broken.yaml"))
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
}

#[test]
fn colour_only_when_asked_or_on_a_terminal() {
    let broken = data("broken.yaml");
    // A pipe (these tests capture stderr): no escape codes, auto or never.
    for color in ["auto", "never"] {
        let run = sluice()
            .args(["validate", "--color", color, "-f"])
            .arg(&broken)
            .output()
            .expect("runs");
        assert!(!stderr(&run).contains('\x1b'), "--color {color}");
    }
    let run = sluice()
        .args(["validate", "--color", "always", "-f"])
        .arg(&broken)
        .output()
        .expect("runs");
    let text = stderr(&run);
    assert!(
        text.contains("\x1b[1;31merror\x1b[0m[\x1b[1mSL202\x1b[0m]"),
        "{text:?}"
    );
    let run = sluice()
        .args(["validate", "--color", "always", "-f"])
        .arg(data("warnings.yaml"))
        .output()
        .expect("runs");
    assert!(
        stderr(&run).contains("\x1b[1;33mwarning\x1b[0m"),
        "{:?}",
        stderr(&run)
    );
}

/// On a terminal (util-linux `script` gives the command a pseudo-terminal), `auto` colours,
/// unless NO_COLOR is set to a non-empty value.
#[test]
fn colour_on_a_terminal_unless_no_color() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to run sluice on a pseudo-terminal");
        return;
    }
    let on_a_terminal = |no_color: Option<&str>| {
        let mut command = Command::new("script");
        command.env_remove("NO_COLOR");
        if let Some(value) = no_color {
            command.env("NO_COLOR", value);
        }
        let line = format!(
            "'{}' validate -f '{}'",
            env!("CARGO_BIN_EXE_sluice"),
            data("broken.yaml").display()
        );
        let run = command
            .args(["-qec", &line, "/dev/null"])
            .output()
            .expect("runs script");
        // `script` copies the terminal's output (stderr included) to its stdout.
        String::from_utf8_lossy(&run.stdout).into_owned()
    };
    let text = on_a_terminal(None);
    assert!(text.contains("\x1b[1;31merror\x1b[0m"), "{text:?}");
    assert!(!on_a_terminal(Some("1")).contains('\x1b'), "NO_COLOR=1");
    assert!(
        on_a_terminal(Some("")).contains('\x1b'),
        "an empty NO_COLOR does not count"
    );
}
#[test]
fn a_rejected_resource_causes_no_follow_on_errors() {
    let run = sluice()
        .args(["validate", "--format", "json", "-f"])
        .arg(data("cascade.yaml"))
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(1));
    let doc = stdout_json(&run);
    let list = doc["diagnostics"].as_array().expect("a list");
    assert_eq!(
        list.len(),
        1,
        "only the DestinationRule's own error: {doc:#}"
    );
    assert_eq!(list[0]["code"], "SL105");
    assert_eq!(list[0]["resource"], "DestinationRule/reviews");
}

#[test]
fn references_unrelated_to_the_rejected_resource_are_still_checked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mesh = tmp.path().join("mesh.yaml");
    let cascade = std::fs::read_to_string(data("cascade.yaml")).expect("read");
    std::fs::write(
        &mesh,
        format!(
            "{cascade}---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ratings}}\nspec:\n  hosts: [ratings]\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 10.0.0.9}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ratings}}\nspec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {{host: ratings, subset: v9}}\n      weight: 50\n    - destination: {{host: nowhere}}\n      weight: 50\n"
        ),
    )
    .expect("write");
    let run = sluice()
        .args(["validate", "--format", "json", "-f"])
        .arg(&mesh)
        .output()
        .expect("runs");
    let doc = stdout_json(&run);
    let codes: Vec<&str> = doc["diagnostics"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|d| d["code"].as_str())
        .collect();
    // The rejected rule's own error, then ratings' unknown subset and unknown host: the
    // rejected DestinationRule is for reviews, so it explains neither.
    assert_eq!(codes, ["SL105", "SL302", "SL301"], "{doc:#}");
}

#[test]
fn weights_not_summing_to_100_are_a_warning_that_says_what_istio_does() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mesh = tmp.path().join("mesh.yaml");
    let cascade = std::fs::read_to_string(data("cascade.yaml")).expect("read");
    // The valid form of cascade.yaml, with weights 70 + 20.
    let text = cascade
        .replace("networking.istio.io/v2", "networking.istio.io/v1")
        .replace("weight: 30", "weight: 20");
    std::fs::write(&mesh, text).expect("write");
    let run = sluice()
        .args(["validate", "-f"])
        .arg(&mesh)
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(0), "a warning: {}", stderr(&run));
    let text = stderr(&run);
    assert!(
        text.contains(
            ":30:5: warning[SL903]: VirtualService/reviews: spec.http[0].route: the weights sum to 90, not 100: current Istio accepts this and splits by relative weight, as sluice does, so the destinations get 77.8 %, 22.2 % of the traffic; older Istio releases rejected it (\"total destination weight 90 != 100\")\n  hint: "
        ),
        "{text}"
    );
    assert!(text.ends_with("validate: 0 errors, 1 warning\n"), "{text}");
    let run = sluice()
        .args(["validate", "--fail-on", "warning", "-f"])
        .arg(&mesh)
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(1));
}

#[test]
fn an_input_with_nothing_to_route_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = tmp.path().join("empty.yaml");
    std::fs::write(&empty, "").expect("write");
    let gateway = tmp.path().join("gateway.yaml");
    std::fs::write(
        &gateway,
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
    )
    .expect("write");
    for (file, message) in [
        (
            &empty,
            "nothing to route: the input (1 file) defines no resource",
        ),
        (
            &gateway,
            "nothing to route: no listener would be generated from the input's Gateway alone",
        ),
    ] {
        let out = tmp.path().join("out");
        let run = sluice()
            .args(["generate", "--wasm-dir", "/opt/wasm", "-f"])
            .arg(file)
            .arg("-o")
            .arg(&out)
            .output()
            .expect("runs");
        assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
        let text = stderr(&run);
        assert!(
            text.contains(&format!(
                ":1:1: error[SL109]: {message}\n  hint: add a ServiceEntry"
            )),
            "{text}"
        );
        assert!(text.ends_with("1 error; nothing was written\n"), "{text}");
        assert!(!out.exists());
    }
}
