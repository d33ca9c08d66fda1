//! A mesh as Kubernetes users keep it (`integration/fixtures/k8s-app/`): Services, Deployments,
//! ServiceAccounts and a ConfigMap in one multi-document file, VirtualServices and
//! DestinationRules with short hosts, no ServiceEntry. The istio target takes the Services as its
//! registry: hosts resolve as Istio resolves them and the clusters the filters route to are named
//! exactly as istiod names them; the other Kubernetes kinds are passed over with one note each;
//! the envoy target, which needs endpoints, says so.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sluice::emit::istio_target::{Attach, IstioOptions, ModuleSource};
use sluice::{Inputs, Options, Severity, Target};

mod common;

fn app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration/fixtures/k8s-app")
}

fn istio(attach: Attach) -> IstioOptions {
    IstioOptions {
        attach,
        source: ModuleSource::File("/var/lib/sluice/wasm".into()),
        ..IstioOptions::default()
    }
}

/// Every cluster name the plugin configs route to (`"cluster": ...` values of the JSON configs).
fn routed_clusters(config: &Value, out: &mut Vec<String>) {
    match config {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("cluster", Value::String(name)) => out.push(name.clone()),
                    (_, Value::String(text)) if text.starts_with('{') => {
                        if let Ok(inner) = serde_json::from_str::<Value>(text) {
                            routed_clusters(&inner, out);
                        }
                    }
                    (_, other) => routed_clusters(other, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| routed_clusters(v, out)),
        _ => {}
    }
}

#[test]
fn services_are_the_registry_and_clusters_are_named_as_istiod_names_them() {
    let inputs = Inputs::read(&[app()]).expect("readable");
    for attach in [Attach::WasmPlugin, Attach::EnvoyFilter] {
        let output = sluice::generate(
            &inputs,
            &Options {
                target: Target::Istio(istio(attach)),
                ..Options::default()
            },
        )
        .unwrap_or_else(|d| panic!("{attach:?}: {d}"));
        // One note per Kubernetes kind that is not traffic configuration.
        let notes: Vec<String> = output
            .warnings
            .0
            .iter()
            .filter(|d| d.severity == Severity::Note)
            .map(|d| d.resource.clone())
            .collect();
        assert_eq!(
            notes,
            [
                "ServiceAccount/bookinfo-reviews",
                "Deployment/reviews-v1",
                "Deployment/reviews-v2",
                "ConfigMap/reviews-settings"
            ],
            "{attach:?}"
        );
        assert!(
            output.warnings.warnings().next().is_none(),
            "{attach:?}: {}",
            output.warnings
        );
        let files = common::documents(&output);
        common::assert_schema_valid(&files);
        let attachment = match attach {
            Attach::WasmPlugin => "wasmplugins.yaml",
            Attach::EnvoyFilter => "envoyfilters.yaml",
        };
        let mut clusters = Vec::new();
        for doc in &files[attachment] {
            routed_clusters(doc, &mut clusters);
        }
        clusters.sort();
        clusters.dedup();
        assert_eq!(
            clusters,
            [
                "outbound|9080|v1|ratings.bookinfo.svc.cluster.local",
                "outbound|9080|v1|reviews.bookinfo.svc.cluster.local",
                "outbound|9080|v2|ratings.bookinfo.svc.cluster.local",
                "outbound|9080|v2|reviews.bookinfo.svc.cluster.local",
            ],
            "{attach:?}"
        );
        // The Services are the app's own manifests: not re-emitted.
        assert!(
            files["resources.yaml"]
                .iter()
                .all(|d| d["kind"] != "Service"),
            "{attach:?}"
        );
        // The rewritten VirtualServices send to the Services' FQDNs, Istio's own names.
        let text = String::from_utf8_lossy(&output.files["virtualservices.yaml"]).into_owned();
        assert!(
            text.contains("host: reviews.bookinfo.svc.cluster.local"),
            "{text}"
        );
    }
}

#[test]
fn namespace_and_cluster_domain_resolve_short_hosts_as_istio_does() {
    // The same app without namespaces, applied with `-n shop` in a cluster named corp.internal.
    let strip = |text: String| {
        text.replace("  namespace: bookinfo\n", "")
            .replace(", namespace: bookinfo", "")
    };
    let mut inputs = Inputs::default();
    for file in ["app.yaml", "traffic.yaml"] {
        let text = std::fs::read_to_string(app().join(file)).expect("read");
        let text = strip(text).replace(
            "ratings.bookinfo.svc.cluster.local",
            "ratings.shop.svc.corp.internal",
        );
        inputs.files.push(sluice::SourceFile {
            name: file.into(),
            text,
        });
    }
    let output = sluice::generate(
        &inputs,
        &Options {
            target: Target::Istio(istio(Attach::WasmPlugin)),
            namespace: "shop".into(),
            cluster_domain: "corp.internal".into(),
            ..Options::default()
        },
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let mut clusters = Vec::new();
    for doc in &common::documents(&output)["wasmplugins.yaml"] {
        routed_clusters(doc, &mut clusters);
    }
    assert!(
        clusters.contains(&"outbound|9080|v2|reviews.shop.svc.corp.internal".to_owned()),
        "{clusters:?}"
    );
    assert!(
        clusters
            .iter()
            .all(|c| c.ends_with(".shop.svc.corp.internal")),
        "{clusters:?}"
    );
}

#[test]
fn the_envoy_target_says_a_service_has_no_endpoints() {
    let inputs = Inputs::read(&[app()]).expect("readable");
    let err = sluice::generate(&inputs, &common::options())
        .expect_err("no endpoints")
        .to_string();
    for host in ["reviews", "ratings"] {
        assert!(
            err.contains(&format!(
                "error[SL403]: Service/{host}: metadata.name: host \"{host}.bookinfo.svc.cluster.local\" is a Kubernetes Service: the envoy target needs its endpoints"
            )),
            "{err}"
        );
    }
    assert!(err.contains("hint: generate with --target istio"), "{err}");
}

#[test]
fn a_service_with_several_ports_needs_a_port_where_the_listener_does_not_tell() {
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: 8080}, {name: http-admin, port: 9090}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: ['*']
  gateways: [edge]
  http:
  - route: [{destination: {host: api}}]
";
    let err = sluice::generate(
        &Inputs::from_text("mesh.yaml", text),
        &Options {
            target: Target::Istio(istio(Attach::WasmPlugin)),
            ..Options::default()
        },
    )
    .expect_err("ambiguous port")
    .to_string();
    assert!(err.contains("has several ports; which one?"), "{err}");
    assert!(err.contains("set `port: {number: ...}`"), "{err}");
}
