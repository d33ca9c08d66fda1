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

/// A ServiceEntry selecting two WorkloadEntries, one of them leaving, both probed.
const LEAVING: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ratings
  annotations: {sluice.dev/probe: '{tcpSocket: {port: 9080}}'}
spec:
  hosts: [ratings]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: staying}
spec: {address: 10.0.0.1, labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: leaving
  annotations: {sluice.dev/draining: 'true'}
spec: {address: 10.0.0.2, labels: {app: ratings}}
";

/// `(address, health_status)` of each endpoint of the ratings cluster's EDS resource in `set`.
fn eds_health(set: &sluice::xds::ResourceSet) -> Vec<(String, String)> {
    let assignment = set
        .of(sluice::xds::Kind::Endpoint)
        .iter()
        .find(|r| r.name == "outbound|9080||ratings")
        .expect("the ratings EDS resource")
        .body
        .clone();
    assignment["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["lb_endpoints"].as_array().cloned().unwrap_or_default())
        .map(|lb| {
            (
                lb["endpoint"]["address"]["socket_address"]["address"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                lb["health_status"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_draining_workload_is_eds_draining_whatever_its_probe_says() {
    use sluice::xds::health::{EdsHealth, apply, by_socket};
    let (set, probed, _) =
        sluice::resources_and_probes(&Inputs::from_text("mesh.yaml", LEAVING), &options())
            .unwrap_or_else(|d| panic!("does not generate:\n{d}"));
    assert_eq!(
        eds_health(&set),
        [
            ("10.0.0.1".to_owned(), "-".to_owned()),
            ("10.0.0.2".to_owned(), "DRAINING".to_owned())
        ]
    );
    // Both still probed (a leaving VM's health stays visible in `status --endpoints`), but a
    // passing probe does not put the leaving one back in the load balancing.
    assert_eq!(probed.len(), 2);
    let healthy = apply(&set, &by_socket(&probed, |_| EdsHealth::Healthy));
    assert_eq!(
        eds_health(&healthy),
        [
            ("10.0.0.1".to_owned(), "HEALTHY".to_owned()),
            ("10.0.0.2".to_owned(), "DRAINING".to_owned())
        ]
    );
}

#[test]
fn the_draining_annotation_is_true_or_false_on_a_workload_entry() {
    let diags =
        diagnose(&LEAVING.replace("sluice.dev/draining: 'true'", "sluice.dev/draining: 'yes'"));
    assert!(
        diags.contains("mesh.yaml:21:")
            && diags.contains("sluice.dev/draining")
            && diags.contains("expected \"true\" or \"false\""),
        "{diags}"
    );
    let on_service = LEAVING.replace(
        "annotations: {sluice.dev/probe: '{tcpSocket: {port: 9080}}'}",
        "annotations: {sluice.dev/draining: 'true'}",
    );
    let diags = diagnose(&on_service);
    assert!(
        diags.contains("mesh.yaml:5:17:") && diags.contains("belongs on a WorkloadEntry"),
        "{diags}"
    );
}
