//! VirtualService `tcp` and `tls` routes and Gateway TLS `PASSTHROUGH`: the TCP listeners the
//! builder emits (insta snapshots of the Envoy config) and the diagnostics for their mistakes.
//! The behaviour through Envoy is in `integration/tests/tcp.rs`.

mod common;

use common::options;
use sluice::{Inputs, Options, generate};

/// The services of every mesh here: `db` (STATIC, subsets v1 and v2, shared with the
/// integration test that runs these shapes through Envoy), `cache` (a REDIS port: TCP to
/// Istio) and the TLS `backends`.
const SERVICES: &str = concat!(
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../integration/fixtures/tcp-db.yaml"
    )),
    "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache}
spec:
  hosts: [cache.internal]
  ports: [{number: 6379, name: redis, protocol: REDIS}]
  resolution: DNS
---
",
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../integration/fixtures/tcp-backends.yaml"
    )),
);

fn envoy_yaml(mesh: &str) -> String {
    common::envoy_yaml(&format!("{SERVICES}{mesh}"))
}

fn diagnose(mesh: &str) -> String {
    common::diagnose(&format!("{SERVICES}{mesh}"))
}

/// The listeners of the config (they come after the clusters).
fn listeners(yaml: &str) -> String {
    let start = yaml
        .find("  listeners:")
        .unwrap_or_else(|| panic!("no listeners in\n{yaml}"));
    let end = yaml.find("\nstats_config:").unwrap_or(yaml.len());
    yaml[start..end].to_owned()
}

/// `tcp` routes: a destination-subnet rule to one subset, then a weighted split for the rest;
/// a TCP service without a VirtualService gets Istio's default chain (hashing on the client
/// IP, as its DestinationRule says); TLS service ports get one SNI chain per host.
#[test]
fn tcp_routes_become_tcp_proxy_chains() {
    let yaml = envoy_yaml(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db.internal]
  tcp:
  - match: [{destinationSubnets: [10.1.0.0/16, 192.168.0.7]}]
    route: [{destination: {host: db.internal, subset: v2}}]
  - route:
    - {destination: {host: db.internal, subset: v1}, weight: 90}
    - {destination: {host: db.internal, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cache}
spec:
  host: cache.internal
  trafficPolicy:
    loadBalancer: {consistentHash: {useSourceIp: true}}
",
    );
    let listeners = listeners(&yaml);
    assert!(
        !listeners.contains("http_connection_manager"),
        "{listeners}"
    );
    insta::assert_snapshot!(listeners);
}

/// A Gateway server in PASSTHROUGH mode routes by SNI with the VirtualServices' `tls` routes
/// and never terminates TLS.
#[test]
fn passthrough_server_routes_by_sni() {
    let yaml = envoy_yaml(
        "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [a.example.com, b.example.com]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [edge]
  tls:
  - match: [{sniHosts: [a.example.com], port: 443}]
    route: [{destination: {host: a.backend}}]
  - match: [{sniHosts: [b.example.com]}]
    route: [{destination: {host: b.backend}}]
",
    );
    let listeners = listeners(&yaml);
    let edge = &listeners[listeners.find("name: listener_443").expect("listener_443")..];
    assert!(
        !edge.contains("transport_socket"),
        "TLS passes through:\n{edge}"
    );
    insta::assert_snapshot!(listeners);
}

/// Mistakes, each with its position and a hint.
#[test]
fn mistakes_in_tcp_and_tls_routes() {
    insta::assert_snapshot!(diagnose(
        "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  servers:
  - port: {number: 443, name: auto, protocol: TLS}
    hosts: ['*']
    tls: {mode: AUTO_PASSTHROUGH}
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: ['*']
    tls: {mode: SIMPLE, serverCertificate: /c.crt, privateKey: /c.key}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db.internal]
  tcp:
  - match: [{destinationSubnets: [10.1.0.0/33, db.internal], sourceLabels: {app: x}}]
    route: [{destination: {host: db.internl}}]
  - route:
    - {destination: {host: db.internal, subset: v3}, weight: 1}
  - route:
    - {destination: {host: db.internal}}
    - {destination: {host: db.internal, subset: v1}}
  tls:
  - route: [{destination: {host: a.backend}}]
  - match: [{sniHosts: [c.example.com]}]
    route: [{destination: {host: a.backend}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db-copy}
spec:
  hosts: [db-copy.internal]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: DNS
"
    ));
}

/// Two services on one TCP port cannot be told apart, and one VirtualService rule that repeats
/// an earlier one's match never matches.
#[test]
fn connections_that_cannot_be_told_apart() {
    let text = format!(
        "{SERVICES}\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db-copy}}
spec:
  hosts: [db-copy.internal]
  ports: [{{number: 5432, name: tcp, protocol: TCP}}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: cache}}
spec:
  hosts: [cache.internal]
  tcp:
  - route: [{{destination: {{host: cache.internal}}}}]
  - route: [{{destination: {{host: cache.internal}}}}]
"
    );
    let d = match generate(&Inputs::from_text("mesh.yaml", &text), &options()) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d.to_string(),
    };
    insta::assert_snapshot!(d);
}

const TUNNEL_PROXY: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: proxy}
spec:
  hosts: [proxy.internal]
  ports: [{number: 3128, name: tcp-proxy, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.9, labels: {pool: a}}]
---
";

/// DestinationRule `tunnel`: a `tcp` route to the proxy carries the connection in a CONNECT
/// (or POST, for the subset that says so) to `targetHost:targetPort`, as Istio's
/// `tunneling_config`; a subset without its own `tunnel` does not inherit the host's (Istio).
#[test]
fn tunnel_wraps_tcp_routes_in_connect() {
    let yaml = envoy_yaml(&format!(
        "{TUNNEL_PROXY}\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: proxy}}
spec:
  host: proxy.internal
  trafficPolicy:
    tunnel: {{targetHost: db.example.com, targetPort: 5432}}
  subsets:
  - name: post
    labels: {{pool: a}}
    trafficPolicy:
      tunnel: {{protocol: POST, targetHost: '2001:db8::1', targetPort: 6379}}
  - name: plain
    labels: {{pool: a}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db}}
spec:
  hosts: [db.internal]
  tcp:
  - route: [{{destination: {{host: proxy.internal}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: cache}}
spec:
  hosts: [cache.internal]
  tcp:
  - match: [{{destinationSubnets: [10.0.0.0/8]}}]
    route: [{{destination: {{host: proxy.internal, subset: post}}}}]
  - route: [{{destination: {{host: proxy.internal, subset: plain}}}}]
"
    ));
    let tunnels: Vec<&str> = yaml
        .lines()
        .filter(|l| {
            l.contains("tunneling_config")
                || l.contains("hostname")
                || l.contains("use_post")
                || l.contains("- name: default.")
                || l.contains("- name: \"outbound")
        })
        .collect();
    insta::assert_snapshot!(tunnels.join("\n"));
}

/// Tunnel mistakes, and a tunnelling destination among weighted ones.
#[test]
fn mistakes_in_tunnels() {
    insta::assert_snapshot!(diagnose(&format!(
        "{TUNNEL_PROXY}\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: proxy}}
spec:
  host: proxy.internal
  trafficPolicy:
    tunnel: {{protocol: GET, targetPort: 0}}
  subsets:
  - name: a
    labels: {{pool: a}}
    trafficPolicy:
      tunnel: {{targetHost: db.example.com, targetPort: 5432}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db}}
spec:
  hosts: [db.internal]
  tcp:
  - route:
    - {{destination: {{host: proxy.internal, subset: a}}, weight: 50}}
    - {{destination: {{host: db.internal}}, weight: 50}}
"
    )));
}

/// A VirtualService with only `tcp` routes leaves its host's HTTP ports to Istio's default
/// route (it does not take the host from them), and routes the TCP port.
#[test]
fn tcp_only_virtual_service_keeps_the_http_default_route() {
    let yaml = envoy_yaml(
        "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mixed}
spec:
  hosts: [mixed.internal]
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 7000, name: tcp, protocol: TCP}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mixed}
spec:
  hosts: [mixed.internal]
  tcp:
  - route: [{destination: {host: mixed.internal, port: {number: 7000}}}]
",
    );
    let listeners = listeners(&yaml);
    let http = &listeners[listeners
        .find("name: listener_8080")
        .expect("listener_8080")..];
    assert!(
        http.contains("name: \"outbound|8080||mixed.internal\""),
        "the default route stays:\n{http}"
    );
    let tcp = &listeners[listeners
        .find("name: listener_7000")
        .expect("listener_7000")..];
    let tcp = &tcp[..tcp.find("- name: listener_").unwrap_or(tcp.len())];
    assert!(
        tcp.contains("name: default.mixed.tcp.0")
            && tcp.contains("cluster: \"outbound|7000||mixed.internal\""),
        "{tcp}"
    );
}

/// A port is HTTP or TCP, never both: an HTTP gateway server on a TCP service's port, and a
/// TCP gateway server on an HTTP one, are errors at the port.
#[test]
fn a_port_is_http_or_tcp() {
    insta::assert_snapshot!(diagnose(
        "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  servers:
  - port: {number: 5432, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 8080, name: tcp, protocol: TCP}
    hosts: ['*']
"
    ));
}

/// On a mesh TLS port Istio takes a VirtualService's `tls` routes first, then its `tcp` routes
/// (here the catch-all for connections whose SNI no `tls` route names).
#[test]
fn a_mesh_tls_port_takes_tls_routes_then_tcp_routes() {
    let yaml = envoy_yaml(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backends}
spec:
  hosts: [a.backend]
  tls:
  - match: [{sniHosts: [a.backend]}]
    route: [{destination: {host: a.backend}}]
  tcp:
  - route: [{destination: {host: b.backend}}]
",
    );
    let listeners = listeners(&yaml);
    let tls = &listeners[listeners
        .find("name: listener_8443")
        .expect("listener_8443")..];
    insta::assert_snapshot!(tls);
}

/// A Gateway `TLS` server in SIMPLE mode terminates TLS with its certificate (no ALPN: the
/// stream is not HTTP), matched on its hosts as SNI, and routes the decrypted stream with the
/// VirtualService's `tcp` routes; a MUTUAL server on the same port verifies clients.
#[test]
fn tls_server_terminates_for_tcp_routes() {
    let yaml = envoy_yaml(
        "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  servers:
  - port: {number: 5433, name: tls-db, protocol: TLS}
    hosts: [db.example.com]
    tls: {mode: SIMPLE, serverCertificate: /certs/db.crt, privateKey: /certs/db.key, minProtocolVersion: TLSV1_2}
  - port: {number: 5433, name: tls-admin, protocol: TLS}
    hosts: [admin.example.com]
    tls: {mode: MUTUAL, serverCertificate: /certs/admin.crt, privateKey: /certs/admin.key, caCertificates: /certs/ca.crt}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db.example.com, admin.example.com]
  gateways: [edge]
  tcp:
  - route: [{destination: {host: db.internal, subset: v1}}]
",
    );
    let listeners = listeners(&yaml);
    let edge = &listeners[listeners
        .find("name: listener_5433")
        .expect("listener_5433")..];
    let edge = &edge[..edge.find("- name: listener_").unwrap_or(edge.len())];
    insta::assert_snapshot!(edge);
}

/// A terminating `TLS` server may name its certificate as a Kubernetes secret, read from
/// `--credentials-dir` like an HTTPS server's; a missing secret is an error at
/// `credentialName`.
#[test]
fn tls_server_certificate_from_credentials_dir() {
    let credentials = tempfile::tempdir().expect("temp dir");
    let secret = credentials.path().join("db-cert");
    std::fs::create_dir(&secret).expect("secret dir");
    std::fs::write(secret.join("tls.crt"), "cert").expect("tls.crt");
    std::fs::write(secret.join("tls.key"), "key").expect("tls.key");
    let mesh = |name: &str| {
        format!(
            "{SERVICES}\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  servers:
  - port: {{number: 5433, name: tls-db, protocol: TLS}}
    hosts: [db.example.com]
    tls: {{mode: SIMPLE, credentialName: {name}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db}}
spec:
  hosts: [db.example.com]
  gateways: [edge]
  tcp:
  - route: [{{destination: {{host: db.internal, subset: v1}}}}]
"
        )
    };
    let options = Options {
        credentials_dir: Some(credentials.path().to_path_buf()),
        ..options()
    };
    let output = generate(&Inputs::from_text("mesh.yaml", &mesh("db-cert")), &options)
        .unwrap_or_else(|d| panic!("{d}"));
    let yaml = String::from_utf8(output.files["envoy.yaml"].clone()).expect("UTF-8");
    let crt = std::path::absolute(secret.join("tls.crt")).expect("absolute");
    assert!(
        yaml.contains(&format!("filename: {}", crt.display())),
        "{}",
        listeners(&yaml)
    );
    let errors = match generate(&Inputs::from_text("mesh.yaml", &mesh("nope")), &options) {
        Ok(_) => panic!("a missing secret is an error"),
        Err(d) => d.to_string(),
    };
    assert!(
        errors.contains("spec.servers[0].tls.credentialName: secret \"nope\" not found"),
        "{errors}"
    );
}
