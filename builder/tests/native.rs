//! Istio features Envoy implements natively (see `sluice::native`): the Envoy config generated
//! for gateway TLS, upstream TLS and mirrors (insta snapshots), and the diagnostics for their
//! typical mistakes. The full example is `examples/native-traffic` (diffed by `examples.rs`);
//! the behaviour through Envoy is in `integration/tests/native.rs`.

mod common;

use common::section;

const SERVICE: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop}
spec:
  hosts: [shop]
  ports: [{number: 8000, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
---
";

fn envoy_yaml(mesh: &str) -> String {
    common::envoy_yaml(&format!("{SERVICE}{mesh}"))
}

fn diagnose(mesh: &str) -> String {
    common::diagnose(&format!("{SERVICE}{mesh}"))
}

const GATEWAY_VS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: [shop.example.com]
  gateways: [edge]
  http:
  - route: [{destination: {host: shop}}]
";

#[test]
fn gateway_tls_termination_mutual_and_https_redirect() {
    let yaml = envoy_yaml(&format!(
        "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls:
      mode: MUTUAL
      serverCertificate: /etc/certs/tls.crt
      privateKey: /etc/certs/tls.key
      caCertificates: /etc/certs/ca.crt
      subjectAltNames: [client.example.com]
      minProtocolVersion: TLSV1_2
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [shop.example.com]
    tls: {{httpsRedirect: true}}
---
{GATEWAY_VS}"
    ));
    insta::assert_snapshot!(
        "https_listener_tls",
        section(&yaml, "transport_socket:", "require_client_certificate")
    );
    insta::assert_snapshot!(
        "http_listener_requires_tls",
        section(&yaml, "- name: default.edge", "require_tls")
    );
}

#[test]
fn upstream_tls_origination_and_consistent_hash_cookie() {
    let yaml = envoy_yaml(
        "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop}
spec:
  host: shop
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {name: session, path: /, ttl: 3600s}
        maglev: {tableSize: 65537}
    tls:
      mode: MUTUAL
      clientCertificate: /etc/certs/client.crt
      privateKey: /etc/certs/client.key
      caCertificates: /etc/certs/ca.crt
      subjectAltNames: [shop.internal]
",
    );
    insta::assert_snapshot!(
        "upstream_tls_cluster",
        section(&yaml, "lb_policy: MAGLEV", "sni:")
    );
    insta::assert_snapshot!("cookie_hash_policy", section(&yaml, "hash_policy:", "ttl:"));
}

#[test]
fn mistakes_in_native_settings() {
    insta::assert_snapshot!(diagnose(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop]
  http:
  - redirect: {uri: /x, redirectCode: 305}
    route: [{destination: {host: shop}}]
  - directResponse: {status: 42, body: {string: a, bytes: YQ==}}
  - route: [{destination: {host: shop}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 150}
    rewrite: {uri: /a, uriRegexRewrite: {match: '(', rewrite: x}}
    corsPolicy: {allowOrigins: [{exact: a, prefix: b}], maxAge: soon}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop}
spec:
  host: shop
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    loadBalancer: {consistentHash: {minimumRingSize: 10}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: PASSTHROUGH}
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE}
"
    ));
}

#[test]
fn port_level_settings_override_per_port_then_per_subset() {
    let mesh = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api]
  ports: [{number: 8000, name: http, protocol: HTTP}, {number: 9000, name: admin, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.1.1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 10}}
    portLevelSettings:
    - port: {number: 9000}
      loadBalancer: {simple: ROUND_ROBIN}
      connectionPool: {tcp: {maxConnections: 1}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 9000}
        loadBalancer: {simple: RANDOM}
";
    let yaml = envoy_yaml(mesh);
    let docs = sluice::yaml::parse_documents(&yaml).expect("generated YAML parses");
    let bootstrap = docs[0].root.to_json();
    let mut seen: Vec<(String, String, u64)> = bootstrap["static_resources"]["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.ends_with("|api")))
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_owned(),
                c["lb_policy"].as_str().expect("lb_policy").to_owned(),
                c["circuit_breakers"]["thresholds"][0]["max_connections"]
                    .as_u64()
                    .expect("max_connections"),
            )
        })
        .collect();
    seen.sort();
    let expected = [
        ("outbound|8000||api", "LEAST_REQUEST", 10),
        ("outbound|8000|v1|api", "LEAST_REQUEST", 10),
        ("outbound|9000||api", "ROUND_ROBIN", 1),
        // The subset's port-level load balancer wins; the host's port-level pool still applies.
        ("outbound|9000|v1|api", "RANDOM", 1),
    ]
    .map(|(n, lb, max)| (n.to_owned(), lb.to_owned(), max));
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(seen, expected);
}

#[test]
fn health_check_annotation_maps_to_envoy_and_reports_mistakes() {
    let annotated = |value: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: shop\n  annotations:\n    sluice.dev/health-check: '{value}'\nspec:\n  host: shop\n"
        )
    };
    let yaml = envoy_yaml(&annotated("{path: /ready, interval: 2s}"));
    insta::assert_snapshot!(
        "health_check",
        section(&yaml, "health_checks:", "unhealthy_threshold")
    );
    let errors = diagnose(&annotated("{path: /ready, every: 2s}"));
    assert!(
        errors.contains("invalid health check: unknown field `every`"),
        "{errors}"
    );
    let errors = diagnose(&annotated("{path: ready}"));
    assert!(
        errors.contains("path \"ready\" must start with '/'"),
        "{errors}"
    );
}

/// The routes of `envoy.yaml` (all listeners), as JSON.
fn routes(yaml: &str) -> Vec<serde_json::Value> {
    let docs = sluice::yaml::parse_documents(yaml).expect("envoy.yaml parses");
    let root = docs[0].root.to_json();
    let mut out = Vec::new();
    for l in root["static_resources"]["listeners"].as_array().unwrap() {
        let rc = &l["filter_chains"][0]["filters"][0]["typed_config"]["route_config"];
        assert_eq!(
            rc["ignore_port_in_host_matching"], true,
            "Istio's HCM routes"
        );
        for vh in rc["virtual_hosts"].as_array().unwrap() {
            out.extend(vh["routes"].as_array().unwrap().iter().cloned());
        }
    }
    out
}

fn route<'a>(
    routes: &'a [serde_json::Value],
    name: &str,
    cluster: Option<&str>,
) -> &'a serde_json::Value {
    routes
        .iter()
        .find(|r| {
            r["name"] == name
                && cluster.is_none_or(|c| {
                    r["match"]["headers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|h| h["string_match"]["exact"] == c)
                })
        })
        .unwrap_or_else(|| panic!("route {name} {cluster:?} in {routes:#?}"))
}

#[test]
fn host_header_operations_become_host_rewrites_as_istio_orders_them() {
    let yaml = envoy_yaml(
        "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop}
spec:
  host: shop
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop]
  http:
  - name: route-set
    match: [{uri: {prefix: /a}}]
    headers: {request: {set: {Host: route.example, x-a: '1'}, remove: [host, x-b]}}
    route:
    - destination: {host: shop, subset: v1}
      headers: {request: {set: {host: dest.example}}}
  - name: dest-only
    match: [{uri: {prefix: /b}}]
    route:
    - destination: {host: shop, subset: v1}
      headers: {request: {add: {':authority': dest.example}}}
  - name: rewrite-wins
    match: [{uri: {prefix: /c}}]
    rewrite: {authority: rewritten.example}
    headers: {request: {set: {host: route.example}}}
    route: [{destination: {host: shop, subset: v1}}]
  - name: weighted
    route:
    - destination: {host: shop, subset: v1}
      weight: 50
      headers: {request: {set: {host: one.example}}}
    - destination: {host: shop, subset: v2}
      weight: 50
      headers: {request: {add: {host: two.example}}, response: {set: {x-v: two}}}
",
    );
    let routes = routes(&yaml);
    let r = route(&routes, "route-set", None);
    assert_eq!(r["route"]["host_rewrite_literal"], "route.example", "{r:#}");
    let added: Vec<&str> = r["request_headers_to_add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["header"]["key"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["x-a"], "host is never a header operation: {r:#}");
    assert_eq!(
        r["request_headers_to_remove"],
        serde_json::json!(["x-b"]),
        "{r:#}"
    );
    let r = route(&routes, "dest-only", None);
    assert_eq!(r["route"]["host_rewrite_literal"], "dest.example", "{r:#}");
    assert!(r.get("request_headers_to_add").is_none(), "{r:#}");
    let r = route(&routes, "rewrite-wins", None);
    assert_eq!(r["route"]["host_rewrite_literal"], "rewritten.example");
    let one = route(&routes, "weighted", Some("outbound|8000|v1|shop"));
    assert_eq!(
        one["route"]["host_rewrite_literal"], "one.example",
        "{one:#}"
    );
    let two = route(&routes, "weighted", Some("outbound|8000|v2|shop"));
    assert_eq!(
        two["route"]["host_rewrite_literal"], "two.example",
        "{two:#}"
    );
    assert!(!yaml.contains("key: host"), "{yaml}");
}

#[test]
fn redirect_prefix_rewrite_replaces_the_rules_own_prefix() {
    let yaml = envoy_yaml(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop]
  http:
  - name: moved
    match: [{uri: {prefix: /old/}}, {uri: {prefix: /legacy}}]
    redirect: {prefixRewrite: /new/, authority: shop.example.com}
  - name: whole
    match: [{uri: {prefix: /w}}]
    redirect: {uri: /elsewhere}
  - route: [{destination: {host: shop}}]
",
    );
    let routes = routes(&yaml);
    let r = &route(&routes, "moved", None)["redirect"];
    assert_eq!(r["regex_rewrite"]["pattern"]["regex"], "^(?:/old/|/legacy)");
    assert_eq!(r["regex_rewrite"]["substitution"], "/new/");
    assert!(r.get("prefix_rewrite").is_none(), "{r:#}");
    let r = &route(&routes, "whole", None)["redirect"];
    assert_eq!(
        r["path_redirect"], "/elsewhere",
        "Istio: uri replaces the whole path"
    );
}
