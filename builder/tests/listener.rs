//! Listener- and route-side Istio fields: Gateway servers sharing a port with SNI-selected
//! certificates, `redirect.derivePort` and DestinationRule `PASSTHROUGH` (insta snapshots of the
//! generated Envoy config, and the diagnostics for their mistakes). The behaviour through Envoy
//! is in `integration/tests/listener.rs`.

mod common;

use common::section;

const SERVICES: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc-a}
spec:
  hosts: [svc-a]
  ports: [{number: 8001, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1}
  - {address: 10.0.0.2, ports: {http: 9001}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc-b}
spec:
  hosts: [svc-b]
  ports: [{number: 8002, name: http, protocol: HTTP}]
  resolution: DNS
  endpoints:
  - {address: b.internal}
---
";

fn envoy_yaml(mesh: &str) -> String {
    common::envoy_yaml(&format!("{SERVICES}{mesh}"))
}

fn diagnose(mesh: &str) -> String {
    common::diagnose(&format!("{SERVICES}{mesh}"))
}

/// The filter-chain skeleton of a listener: matches, virtual-host domains and certificates, in
/// order (the HTTP filters between them are the usual ones).
fn chain_outline(yaml: &str, listener: &str) -> String {
    let from = yaml
        .find(&format!("name: {listener}"))
        .unwrap_or_else(|| panic!("no {listener} in\n{yaml}"));
    yaml[from..]
        .lines()
        .skip(1)
        .take_while(|l| !l.contains("- name: listener_") && !l.starts_with("  clusters:"))
        .filter(|l| !l.contains("value:"))
        .filter(|l| {
            [
                "filter_chain_match",
                "server_names",
                "- name: default.",
                "domains:",
                "filename: /certs",
                "listener_filters",
                "tls_inspector",
                "example.com",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const SNI_GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  servers:
  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: [ns/a.example.com, '*.a.example.com']
    tls: {mode: SIMPLE, serverCertificate: /certs/a.crt, privateKey: /certs/a.key}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: SIMPLE, serverCertificate: /certs/b.crt, privateKey: /certs/b.key}
  - port: {number: 443, name: https-b2, protocol: HTTPS}
    hosts: [b2.example.com]
    tls: {mode: SIMPLE, serverCertificate: /certs/b.crt, privateKey: /certs/b.key}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a.example.com, api.a.example.com]
  gateways: [edge]
  http:
  - route: [{destination: {host: svc-a}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b}
spec:
  hosts: [b.example.com, b2.example.com]
  gateways: [edge]
  http:
  - route: [{destination: {host: svc-b}}]
";

#[test]
fn servers_sharing_a_port_get_one_sni_chain_per_certificate() {
    let yaml = envoy_yaml(SNI_GATEWAY);
    insta::assert_snapshot!("sni_chains", chain_outline(&yaml, "listener_443"));
}

#[test]
fn one_certificate_per_port_keeps_a_single_chain_for_any_sni() {
    let one = SNI_GATEWAY.replace("/certs/a.", "/certs/b.");
    let yaml = envoy_yaml(&one);
    let outline = chain_outline(&yaml, "listener_443");
    assert!(!outline.contains("server_names"), "{outline}");
    assert!(!outline.contains("tls_inspector"), "{outline}");
    assert_eq!(
        outline.matches("filename: /certs/b.crt").count(),
        1,
        "{outline}"
    );
}

#[test]
fn derive_port_from_request_port_writes_the_route_port() {
    let yaml = envoy_yaml(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [svc-a]
  http:
  - name: request-port
    match: [{uri: {prefix: /r}}]
    redirect: {uri: /moved, derivePort: FROM_REQUEST_PORT}
  - name: protocol-default
    redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}
",
    );
    insta::assert_snapshot!(
        "derive_port_redirects",
        section(&yaml, "- name: request-port", "scheme_redirect")
    );
}

#[test]
fn passthrough_is_an_original_dst_cluster_reached_by_naming_an_endpoint() {
    let yaml = envoy_yaml(
        "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec:
  host: svc-a
  trafficPolicy:
    loadBalancer: {simple: PASSTHROUGH}
",
    );
    insta::assert_snapshot!(
        "passthrough_routes",
        section(&yaml, "exact: \"outbound|8001||svc-a\"", "inline_string")
    );
    insta::assert_snapshot!(
        "passthrough_cluster",
        section(
            &yaml,
            "  - name: \"outbound|8001||svc-a\"",
            "use_http_header"
        )
    );
}

#[test]
fn mistakes_in_listener_fields() {
    insta::assert_snapshot!(diagnose(
        "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  servers:
  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, serverCertificate: /certs/a.crt, privateKey: /certs/a.key}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: [b.example.com, a.example.com]
    tls: {mode: SIMPLE, serverCertificate: /certs/b.crt, privateKey: /certs/b.key}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b}
spec:
  host: svc-b
  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec:
  host: svc-a
  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: split}
spec:
  hosts: [svc-a]
  http:
  - route:
    - {destination: {host: svc-a}, weight: 50}
    - {destination: {host: svc-b}, weight: 50}
  - redirect: {uri: /x, port: 8080, derivePort: FROM_REQUEST_PORT}
  - redirect: {derivePort: FROM_SOMEWHERE}
"
    ));
}

#[test]
fn scheme_is_a_scheme_header_match_and_stat_prefix_names_the_route() {
    let yaml = envoy_yaml(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [svc-a]
  http:
  - name: secure
    match: [{scheme: {exact: https}, statPrefix: svc_a_secure}]
    route: [{destination: {host: svc-a}}]
",
    );
    // The router's match (what picks the rule) reads `:scheme`.
    assert!(
        yaml.contains(r#"\"headers\":{\":scheme\":{\"exact\":\"https\"}}"#),
        "{yaml}"
    );
    insta::assert_snapshot!(
        "stat_prefix_route",
        section(&yaml, "- name: secure", "stat_prefix")
    );
}

#[test]
fn mistakes_in_scheme_and_stat_prefix() {
    insta::assert_snapshot!(diagnose(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [svc-a]
  http:
  - match:
    - {scheme: {exact: https}, headers: {':scheme': {exact: http}}}
    - {statPrefix: one}
    - {statPrefix: two}
    route: [{destination: {host: svc-a}}]
  - match: [{statPrefix: 'has space', scheme: {exact: http, prefix: h}}]
    route: [{destination: {host: svc-a}}]
"
    ));
}
