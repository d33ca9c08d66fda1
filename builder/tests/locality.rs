//! Locality load balancing and upstream protocol settings (see `sluice::locality`): the Envoy
//! config generated from `examples/locality` for a proxy in us-east/zone-a (insta snapshots of
//! its clusters and route), the same without `--locality`, and the diagnostics for mistakes.
//! The behaviour through Envoy is in `integration/tests/locality.rs`, which also runs
//! `envoy --mode validate` on this example.

use std::path::Path;

use sluice::locality::Locality;
use sluice::{Inputs, Options, WasmModules, generate};

fn options(locality: Option<&str>) -> Options {
    Options {
        wasm: WasmModules::Reference("/opt/sluice/wasm".into()),
        locality: locality.map(|l| Locality::parse(l).expect("a locality")),
        ..Options::default()
    }
}

fn example() -> Inputs {
    Inputs::read(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/locality")])
        .expect("examples/locality is readable")
}

/// The YAML from the first line containing `from` to the first line after it containing `to`.
fn section(yaml: &str, from: &str, to: &str) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains(from))
        .unwrap_or_else(|| panic!("no {from:?} in\n{yaml}"));
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.contains(to))
        .map_or(lines.len(), |i| start + 1 + i);
    lines[start..end].join("\n")
}

#[test]
fn example_for_a_proxy_in_us_east_zone_a() {
    let output =
        generate(&example(), &options(Some("us-east/zone-a"))).unwrap_or_else(|d| panic!("{d}"));
    assert!(
        output.warnings.0.is_empty(),
        "no warnings expected:\n{}",
        output.warnings
    );
    let yaml = String::from_utf8(output.files["envoy.yaml"].clone()).expect("UTF-8");
    insta::assert_snapshot!("node", section(&yaml, "node:", "static_resources:"));
    insta::assert_snapshot!(
        "reviews_failover",
        section(&yaml, "name: \"outbound|9080||reviews\"", "- name:")
    );
    insta::assert_snapshot!(
        "ratings_distribute",
        section(&yaml, "name: \"outbound|9080||ratings\"", "- name:")
    );
    insta::assert_snapshot!(
        "retry_remote_localities",
        section(&yaml, "retry_policy:", "timeout:")
    );
}

#[test]
fn without_locality_endpoints_are_grouped_and_a_warning_says_to_pass_it() {
    let output = generate(&example(), &options(None)).unwrap_or_else(|d| panic!("{d}"));
    let warnings = output.warnings.to_string();
    assert_eq!(
        warnings.matches("pass `--locality").count(),
        2,
        "{warnings}"
    );
    let yaml = String::from_utf8(output.files["envoy.yaml"].clone()).expect("UTF-8");
    assert!(!yaml.contains("node:"), "{yaml}");
    assert!(!yaml.contains(" priority: "), "{yaml}");
    assert!(!yaml.contains("locality_weighted_lb_config"), "{yaml}");
    assert_eq!(yaml.matches("region: us-east").count(), 3, "{yaml}");
}

#[test]
fn mistakes_in_locality_settings() {
    let mesh = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop}
spec:
  hosts: [shop]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, locality: us-east//a}
  - {address: 10.0.0.2, locality: us-*}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop}
spec:
  host: shop
  trafficPolicy:
    connectionPool: {http: {h2UpgradePolicy: SOMETIMES}}
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us-east/*/a
          to: {us-east: 70, us-east/zone-a: 20, us-west: 0}
        failover: [{from: us-east, to: us-east}, {from: us-west/zone-a, to: '*'}]
        failoverPriority: [topology.istio.io/network]
  subsets:
  - name: v1
    trafficPolicy:
      loadBalancer: {localityLbSetting: {enabled: true, failover: [{from: us-east}]}}
";
    let diags = match generate(
        &Inputs::from_text("mesh.yaml", mesh),
        &options(Some("us-east")),
    ) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d.to_string(),
    };
    insta::assert_snapshot!("mistakes", diags);
}
