//! Mistakes in what the wiring adds: the `sluice.dev/*` annotations (errors point inside the
//! block scalar, at the real file:line:col) and Istio `fault` blocks checked by the fault
//! filter's own rules. One insta snapshot per mistake; every case must fail generation.

use sluice::{Inputs, Options, WasmModules, generate};

/// reviews (v1, v2) with a breaker annotation slot, and a VirtualService whose routes are
/// `jason` (one destination) and `rollout` (v1/v2 split).
fn mesh(dr_annotations: &str, vs_annotations: &str, fault: &str) -> String {
    format!(
        "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: 9082}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: 9083}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  annotations:{dr_annotations}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  annotations:{vs_annotations}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: reviews, subset: v2}}}}]{fault}
  - name: rollout
    route:
    - {{destination: {{host: reviews, subset: v1}}, weight: 90}}
    - {{destination: {{host: reviews, subset: v2}}, weight: 10}}
"
    )
}

fn options() -> Options {
    Options {
        wasm: WasmModules::Reference("wasm".into()),
        ..Options::default()
    }
}

fn diagnose(text: &str) -> String {
    match generate(&Inputs::from_text("mesh.yaml", text), &options()) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => {
            assert!(d.has_errors());
            d.to_string()
        }
    }
}

fn canary(body: &str) -> String {
    let indented: String = body.lines().map(|l| format!("\n      {l}")).collect();
    mesh(" {}", &format!("\n    sluice.dev/canary: |{indented}"), "")
}

fn fault(block: &str) -> String {
    mesh(" {}", " {}", &format!("\n    fault: {block}"))
}

fn breaker(body: &str) -> String {
    let indented: String = body.lines().map(|l| format!("\n      {l}")).collect();
    mesh(&format!("\n    sluice.dev/breaker: |{indented}"), " {}", "")
}

#[test]
fn valid_settings_generate() {
    let text = mesh(
        "\n    sluice.dev/breaker: |\n      consecutiveErrors: 5\n      subsets:\n        v2: {consecutiveErrors: 3}",
        "\n    sluice.dev/canary: |\n      rollout:\n        sticky: {header: end-user}\n        schedule:\n          steps:\n          - {weights: [90, 10], hold: 30s}\n          - {weights: [0, 100], hold: 0s}\n    sluice.dev/fault: |\n      maxActiveFaults: 10\n      headerFaults: {trustedCidrs: [127.0.0.1/32]}",
        "\n    fault: {abort: {httpStatus: 503, percentage: {value: 1}}}",
    );
    let output = generate(&Inputs::from_text("mesh.yaml", &text), &options())
        .unwrap_or_else(|d| panic!("{d}"));
    let yaml = String::from_utf8(output.files["envoy.yaml"].clone()).expect("UTF-8");
    for filter in ["sluice-canary", "sluice-fault", "sluice-breaker"] {
        assert!(yaml.contains(filter), "{filter} is in the chain");
    }
}

#[test]
fn host_level_max_ejection_percent_reaches_every_subset_breaker() {
    let text = breaker(
        "consecutiveErrors: 5\nmaxEjectionPercent: 50\nsubsets:\n  v2: {consecutiveErrors: 3}",
    );
    let output = generate(&Inputs::from_text("mesh.yaml", &text), &options())
        .unwrap_or_else(|d| panic!("{d}"));
    let yaml = String::from_utf8(output.files["envoy.yaml"].clone()).expect("UTF-8");
    // The breaker's config is a JSON string inside the YAML.
    let yaml = yaml.replace("\\\"", "\"");
    for cluster in ["outbound|9080|v1|reviews", "outbound|9080|v2|reviews"] {
        let at = yaml
            .find(&format!("\"cluster\":\"{cluster}\",\"consecutiveErrors\""))
            .unwrap_or_else(|| panic!("{cluster} has a breaker:\n{yaml}"));
        let breaker = &yaml[at..];
        let end = breaker.find('}').unwrap_or(breaker.len());
        assert!(
            breaker[..end].contains("\"maxEjectionPercent\":50"),
            "{cluster}: {}",
            &breaker[..end]
        );
    }
}

macro_rules! case {
    ($name:ident, $text:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(diagnose(&$text));
        }
    };
}

case!(
    unknown_route_name_in_annotation,
    canary("rolout:\n  sticky: {header: end-user}")
);
case!(
    bad_duration_in_a_schedule,
    canary(
        "rollout:\n  schedule:\n    steps:\n    - {weights: [90, 10], hold: 30 minutes}\n    - {weights: [0, 100], hold: 0s}"
    )
);
case!(
    schedule_weights_length_mismatch,
    canary("rollout:\n  schedule:\n    steps:\n    - {weights: [80, 10, 10], hold: 30s}")
);
case!(
    all_zero_schedule_step,
    canary(
        "rollout:\n  schedule:\n    steps:\n    - {weights: [90, 10], hold: 30s}\n    - {weights: [0, 0], hold: 30s}"
    )
);
case!(
    schedule_on_a_single_destination_route,
    canary("jason:\n  schedule:\n    steps:\n    - {weights: [100], hold: 30s}")
);
case!(
    unknown_field_in_canary_annotation,
    canary("\"1\":\n  stiky: {header: end-user}")
);
case!(
    http_status_out_of_range,
    fault("{abort: {httpStatus: 700, percentage: {value: 100}}}")
);
case!(
    unknown_grpc_status,
    fault("{abort: {grpcStatus: UNAVAILABLE_NOW, percentage: {value: 100}}}")
);
case!(
    percentage_over_100,
    fault("{delay: {fixedDelay: 5s, percentage: {value: 150}}}")
);
case!(
    unknown_breaker_count_as,
    breaker("consecutiveErrors: 5\ncountAs: [5xx, 6xx]")
);
case!(
    breaker_max_ejection_percent_is_host_level_and_at_most_100,
    breaker(
        "consecutiveErrors: 5\nmaxEjectionPercent: 101\nsubsets:\n  v2: {maxEjectionPercent: 50}"
    )
);
case!(
    breaker_unknown_subset_and_bad_override,
    breaker(
        "consecutiveErrors: 5\nsubsets:\n  v3: {consecutiveErrors: 3}\n  v2: {baseEjectionTime: 10m, maxEjectionTime: 1m}"
    )
);
case!(
    invalid_yaml_inside_annotation,
    mesh(
        " {}",
        "\n    sluice.dev/fault: |\n      maxActiveFaults: [1\n      debugHeader: true",
        ""
    )
);

/// `sluice.dev/fault` on a VirtualService none of whose routes has a `fault`: no fault filter is
/// attached, so the settings would be dropped silently; a warning at the annotation says so, on
/// every target. With a `fault` on a route, no warning.
#[test]
fn fault_settings_without_any_fault_are_a_warning_at_the_annotation() {
    let extras = "\n    sluice.dev/fault: |\n      headerFaults: {trustedCidrs: [10.0.0.0/8]}";
    let without = mesh(" {}", extras, "");
    for target in [
        sluice::Target::Envoy,
        sluice::Target::Istio(sluice::emit::istio_target::IstioOptions::default()),
    ] {
        let output = generate(
            &Inputs::from_text("mesh.yaml", &without),
            &Options {
                target,
                ..options()
            },
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let text = output.warnings.to_string();
        assert!(
            text.contains("warning[SL901]: VirtualService/reviews: metadata.annotations.sluice.dev/fault: sluice.dev/fault has no effect"),
            "{text}"
        );
        assert!(text.contains("hint: add a `fault` to a route"), "{text}");
    }
    let with = mesh(
        " {}",
        extras,
        "\n    fault: {abort: {httpStatus: 503, percentage: {value: 0}}}",
    );
    let output = generate(&Inputs::from_text("mesh.yaml", &with), &options())
        .unwrap_or_else(|d| panic!("{d}"));
    assert!(
        !output.warnings.to_string().contains("has no effect"),
        "{}",
        output.warnings
    );
}

/// `guard` of `sluice.dev/canary` reaches the canary's plugin config; the canary is the route's
/// last destination, so naming it is refused, and the filter's own range checks apply.
#[test]
fn canary_guard_reaches_the_plugin_config_and_bad_guards_are_refused() {
    let text = canary(
        "rollout:\n  guard: {minRequests: 50, window: 20s, margin: 0.02,\n    \
         failures: {grpc: [UNAVAILABLE, UNIMPLEMENTED], latency: 750ms}}",
    );
    let output = generate(&Inputs::from_text("mesh.yaml", &text), &options())
        .unwrap_or_else(|d| panic!("{d}"));
    let yaml = String::from_utf8(output.files["envoy.yaml"].clone()).expect("UTF-8");
    for field in [
        "guard",
        "minRequests",
        "falseAlarm",
        "20s",
        "UNIMPLEMENTED",
        "750ms",
        "outcomes",
    ] {
        assert!(yaml.contains(field), "{field} missing:\n{yaml}");
    }
    for (body, needle) in [
        (
            "rollout:\n  guard: {canary: outbound}",
            "the canary is the route's last destination",
        ),
        (
            "rollout:\n  guard: {margin: 2}",
            "margin: must be in [0, 1)",
        ),
        (
            "rollout:\n  guard: {minRequests: 3}",
            "minRequests: must be at least 10",
        ),
        ("jason:\n  guard: {}", "nothing to compare the canary with"),
        (
            "rollout:\n  guard:\n    failures:\n      grpc: [INTERNAL, UNAVAILBLE]",
            "mesh.yaml:32:30: error[SL206]: VirtualService/reviews: \
             metadata.annotations[\"sluice.dev/canary\"].rollout.guard.failures.grpc[1]: \
             not a gRPC error status",
        ),
        (
            "rollout:\n  guard:\n    failures:\n      grpc: [INTERNAL, UNAVAILBLE]",
            "did you mean `UNAVAILABLE`?",
        ),
        (
            "rollout:\n  guard: {failures: {grpc: [OK]}}",
            "guard.failures.grpc[0]: not a gRPC error status",
        ),
        (
            "rollout:\n  guard: {failures: {latency: 0s}}",
            "guard.failures.latency: must be a duration from 1ms to 1h",
        ),
        (
            "rollout:\n  guard: {failures: {latency: soon}}",
            "guard.failures.latency: must be a duration",
        ),
        (
            "rollout:\n  guard: {failures: {outcomes: [], grpc: []}}",
            "rollout.guard.failures: failures counts nothing",
        ),
        (
            "rollout:\n  guard: {failures: {outcomes: [5xx], grcp: []}}",
            "grcp",
        ),
        ("rollout:\n  guard: {failures: [5xx]}", "guard.failures"),
    ] {
        let diagnostics = diagnose(&canary(body));
        assert!(
            diagnostics.contains(needle),
            "{body}: expected {needle:?} in\n{diagnostics}"
        );
    }
}

/// `sluice.dev/debug` with its secret in `dir/<secret>.secret` (absolute, so the test does not
/// depend on the working folder), plus `extra` lines.
fn debug(dir: &std::path::Path, secret: &str, extra: &str) -> String {
    let path = dir.join(format!("{secret}.secret"));
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    mesh(
        " {}",
        &format!(
            "\n    sluice.dev/debug: |\n      header: x-sluice-debug\n      secretFile: {}{extra}",
            path.display()
        ),
        "",
    )
}

/// The suite's plugin config in a generated envoy.yaml, as JSON.
fn suite_config(yaml: &str) -> serde_json::Value {
    let line = yaml
        .lines()
        .skip_while(|l| !l.contains("name: sluice_suite"))
        .find_map(|l| l.trim().strip_prefix("value: "))
        .unwrap_or_else(|| panic!("no suite config:\n{yaml}"));
    let text: String = serde_json::from_str(line).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn debug_setting_reaches_the_suite_config_with_every_rules_position() {
    const SECRET: &str = "0123456789abcdef-debug";
    let dir = tempfile::tempdir().unwrap();
    let text = debug(dir.path(), SECRET, "\n      trustedCidrs: [10.0.0.0/8]");
    let suite = Options {
        suite: true,
        ..options()
    };
    let output =
        generate(&Inputs::from_text("mesh.yaml", &text), &suite).unwrap_or_else(|d| panic!("{d}"));
    assert!(output.warnings.0.is_empty(), "{}", output.warnings);
    let yaml = String::from_utf8(output.files["envoy.yaml"].clone()).expect("UTF-8");
    let config = suite_config(&yaml);
    assert_eq!(
        config["debug"],
        serde_json::json!({"header": "x-sluice-debug", "secret": SECRET,
            "trustedCidrs": ["10.0.0.0/8"],
            // `http[0]` and `http[1]` of the VirtualService, where `- name:` starts.
            "positions": ["mesh.yaml:35:5", "mesh.yaml:38:5"]}),
        "{config}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[34].trim_start().starts_with("- name: jason"),
        "{}",
        lines[34]
    );
    assert!(
        lines[37].trim_start().starts_with("- name: rollout"),
        "{}",
        lines[37]
    );

    // The chain does not explain requests: no section, no secret anywhere, and a warning.
    let output = generate(&Inputs::from_text("mesh.yaml", &text), &options())
        .unwrap_or_else(|d| panic!("{d}"));
    let warnings = output.warnings.to_string();
    assert!(
        warnings.contains(
            "warning[SL901]: VirtualService/reviews: metadata.annotations.sluice.dev/debug: \
             sluice.dev/debug has no effect without --suite"
        ),
        "{warnings}"
    );
    for (name, bytes) in &output.files {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(SECRET), "{name} leaks the secret");
        assert!(!text.contains("positions"), "{name}");
    }

    // Without the annotation, the suite's config has no debug section.
    let plain = mesh(" {}", " {}", "");
    let output = generate(&Inputs::from_text("mesh.yaml", &plain), &suite).unwrap();
    let yaml = String::from_utf8(output.files["envoy.yaml"].clone()).expect("UTF-8");
    assert!(suite_config(&yaml).get("debug").is_none());
}

#[test]
fn bad_debug_settings_are_sl207_at_the_field_and_never_quote_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.secret");
    for (text, needle) in [
        (
            debug(dir.path(), "too-short", ""),
            "mesh.yaml:30:7: error[SL207]: VirtualService/reviews: \
             metadata.annotations[\"sluice.dev/debug\"].secretFile: the secret in the file \
             must be at least 16 visible ASCII characters",
        ),
        (
            mesh(
                " {}",
                &format!(
                    "\n    sluice.dev/debug: |\n      header: x-sluice-debug\n      \
                     secretFile: {}",
                    missing.display()
                ),
                "",
            ),
            "secretFile: cannot read the secret file",
        ),
        (
            mesh(
                " {}",
                "\n    sluice.dev/debug: |\n      trustedCidrs: [10.0.0.0/8]",
                "",
            ),
            "error[SL207]: VirtualService/reviews: metadata.annotations[\"sluice.dev/debug\"]: \
             missing `header`",
        ),
        (
            mesh(
                " {}",
                "\n    sluice.dev/debug: |\n      header: x-sluice-debug",
                "",
            ),
            "needs a secret, trustedCidrs, or both",
        ),
        (
            debug(
                dir.path(),
                "0123456789abcdef-ok",
                "\n      trustedCidrs: [10.1.0.0/8]",
            ),
            "metadata.annotations[\"sluice.dev/debug\"].trustedCidrs[0]: invalid CIDR",
        ),
        (
            mesh(
                " {}",
                "\n    sluice.dev/debug: |\n      header: X-Debug\n      trustedCidrs: [::1]",
                "",
            ),
            "metadata.annotations[\"sluice.dev/debug\"].header: header \"X-Debug\": must be a \
             lowercase header name",
        ),
        (
            mesh(
                " {}",
                "\n    sluice.dev/debug: |\n      header: x-sluice-cluster\n      trustedCidrs: [::1]",
                "",
            ),
            "other than sluice's own",
        ),
        (
            mesh(
                " {}",
                "\n    sluice.dev/debug: |\n      header: x-d\n      secret: inline-secret-123456",
                "",
            ),
            "unknown field `secret`",
        ),
    ] {
        let report = diagnose(&text);
        assert!(report.contains(needle), "{needle}\n{report}");
        assert!(!report.contains("too-short\n") && !report.contains("= too-short"));
    }
    // On a DestinationRule, it is misplaced.
    let text = mesh(
        "\n    sluice.dev/debug: |\n      header: x-sluice-debug",
        " {}",
        "",
    );
    let report = diagnose(&text);
    assert!(
        report.contains("`sluice.dev/debug` belongs on a VirtualService, not a DestinationRule"),
        "{report}"
    );
}
