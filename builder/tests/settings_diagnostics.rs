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
