//! WorkloadGroup: read, checked (its probe resolved as the control plane will run it), and a
//! selector that only a group's future VMs match is not an error.

mod common;

use common::{diagnose, envoy_yaml};

const SERVICE: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
---
";

#[test]
fn a_group_whose_vms_the_selector_matches_generates() {
    let yaml = envoy_yaml(&format!(
        "{SERVICE}apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {{name: ratings-vm}}
spec:
  metadata: {{labels: {{app: ratings}}}}
  template: {{ports: {{http: 9080}}, serviceAccount: ratings}}
  probe: {{httpGet: {{port: 9080, path: /healthz}}, periodSeconds: 5, failureThreshold: 2}}
"
    ));
    assert!(yaml.contains("outbound|9080||ratings"), "{yaml}");
}

#[test]
fn without_a_group_the_selector_matches_nothing_and_says_so() {
    let diags = diagnose(SERVICE);
    assert!(
        diags.contains("mesh.yaml:8:3") && diags.contains("no WorkloadGroup"),
        "{diags}"
    );
}

#[test]
fn a_probe_the_control_plane_cannot_run_is_refused_at_its_field() {
    let diags = diagnose(&format!(
        "{SERVICE}apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {{name: ratings-vm}}
spec:
  metadata: {{labels: {{app: ratings}}}}
  template: {{address: 10.0.0.1}}
  probe:
    httpGet: {{port: 9080, scheme: HTTPS}}
"
    ));
    assert!(diags.contains("spec.probe.httpGet.scheme"), "{diags}");
    assert!(
        diags.contains("mesh.yaml:17:"),
        "the scheme's line: {diags}"
    );
    assert!(diags.contains("spec.template.address"), "{diags}");
}
