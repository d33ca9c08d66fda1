//! Central health checking's input: which endpoints `sluice serve` probes and how (a
//! WorkloadGroup's `probe` for its registered entries, `sluice.dev/probe` on a ServiceEntry or
//! WorkloadEntry), and the annotation's errors at their file position and field.

mod common;

use common::{diagnose, options};
use sluice::Inputs;
use sluice::input::probe::Check;

fn probed(text: &str) -> Vec<(String, Check, Vec<u32>, String)> {
    let inputs = Inputs::from_text("mesh.yaml", text);
    let (_, probed, _) = sluice::resources_and_probes(&inputs, &options())
        .unwrap_or_else(|d| panic!("does not generate:\n{d}"));
    probed
        .into_iter()
        .map(|(key, p)| (key, p.probe.check, p.ports.into_iter().collect(), p.source))
        .collect()
}

const SHOP: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: shop
  annotations:
    sluice.dev/probe: |
      httpGet: {path: /healthz, port: http}
      periodSeconds: 2
spec:
  hosts: [shop]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, ports: {http: 9001}}
  - {address: 10.0.0.2}
";

#[test]
fn a_service_entry_probe_applies_to_each_endpoint_on_its_named_port() {
    let probed = probed(SHOP);
    let http = |port| Check::Http {
        port,
        path: "/healthz".into(),
        host: None,
        headers: vec![],
    };
    assert_eq!(
        probed,
        [
            (
                "10.0.0.1:9001".to_owned(),
                http(9001),
                vec![9001],
                "ServiceEntry/default/shop".to_owned()
            ),
            (
                "10.0.0.2:80".to_owned(),
                http(80),
                vec![80],
                "ServiceEntry/default/shop".to_owned()
            ),
        ]
    );
}

#[test]
fn a_registered_entry_takes_its_groups_probe_and_its_own_annotation_wins() {
    let mesh = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings}
spec:
  hosts: [ratings]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: ratings-vm}
spec:
  metadata: {labels: {app: ratings}}
  template: {ports: {http: 9080}}
  probe: {tcpSocket: {port: 9080}, periodSeconds: 5}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ratings-vm-10-0-0-7
  annotations: {istio.io/autoRegistrationGroup: ratings-vm}
spec: {address: 10.0.0.7, labels: {app: ratings}, ports: {http: 9080}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: by-hand
  annotations:
    sluice.dev/probe: '{grpc: {port: 9090}}'
spec: {address: 10.0.0.8, labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: unprobed}
spec: {address: 10.0.0.9, labels: {app: ratings}}
";
    let probed = probed(mesh);
    assert_eq!(
        probed,
        [
            (
                "10.0.0.7:9080".to_owned(),
                Check::Tcp { port: 9080 },
                vec![9080],
                "WorkloadGroup/default/ratings-vm".to_owned()
            ),
            (
                "10.0.0.8:9090".to_owned(),
                Check::Grpc {
                    port: 9090,
                    service: String::new()
                },
                vec![9080],
                "WorkloadEntry/default/by-hand".to_owned()
            ),
        ],
        "the entry without a group or annotation is not probed"
    );
}

#[test]
fn annotation_errors_point_inside_the_value() {
    let bad = SHOP.replace("port: http}", "port: admin}").replace(
        "periodSeconds: 2",
        "periodSeconds: 2\n      timeoutSecond: 1",
    );
    let diags = diagnose(&bad);
    // Line 7 holds `httpGet`, line 9 the misspelt field.
    assert!(
        diags.contains("mesh.yaml:9:7") && diags.contains("timeoutSecond"),
        "{diags}"
    );
    assert!(diags.contains("did you mean `timeoutSeconds`?"), "{diags}");
    let fixed = bad.replace("\n      timeoutSecond: 1", "");
    let diags = diagnose(&fixed);
    assert!(
        diags.contains("mesh.yaml:7:")
            && diags.contains("metadata.annotations[\"sluice.dev/probe\"].httpGet.port")
            && diags.contains("no port is named \"admin\"")
            && diags.contains("the name of one of the ServiceEntry's `ports`"),
        "{diags}"
    );
    let exec = SHOP.replace(
        "httpGet: {path: /healthz, port: http}",
        "exec: {command: [true]}",
    );
    let diags = diagnose(&exec);
    assert!(
        diags.contains("sluice.dev/probe\"].exec") && diags.contains("istio-agent"),
        "{diags}"
    );
}

#[test]
fn the_annotation_belongs_on_a_service_entry_or_workload_entry() {
    let diags = diagnose(
        "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop}
spec:
  hosts: [shop]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: shop
  annotations: {sluice.dev/probe: '{tcpSocket: {port: 80}}'}
spec: {host: shop}
",
    );
    assert!(
        diags.contains("mesh.yaml:14:")
            && diags.contains("belongs on a ServiceEntry or WorkloadEntry"),
        "{diags}"
    );
}

#[test]
fn a_named_port_in_a_workload_group_is_refused_as_istio_would() {
    let diags = diagnose(
        "\
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: ratings-vm}
spec:
  template: {ports: {http: 9080}}
  probe: {httpGet: {port: http}}
",
    );
    assert!(
        diags.contains("spec.probe.httpGet.port") && diags.contains("not the name \"http\""),
        "{diags}"
    );
}
