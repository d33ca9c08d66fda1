//! Issue #8 leftovers: DestinationRule `retryBudget`, `proxyProtocol`, `tls.credentialName`
//! (through `--credentials-dir`), ServiceEntry `subjectAltNames` and HTTP `match.gateways`:
//! insta snapshots of the generated Envoy config and the diagnostics for their mistakes. The
//! behaviour through Envoy (and Envoy's acceptance of these configs) is in
//! `integration/tests/upstream_policy.rs`.

mod common;

use sluice::{Inputs, Options, generate};

const SERVICES: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.internal]
  ports: [{number: 8443, name: http, protocol: HTTP}]
  resolution: STATIC
  subjectAltNames: [spiffe://example.org/ns/default/sa/api, api.internal]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.internal]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.2}]
---
";

fn options(credentials_dir: Option<&std::path::Path>) -> Options {
    Options {
        credentials_dir: credentials_dir.map(std::path::Path::to_path_buf),
        ..common::options()
    }
}

fn envoy_yaml(mesh: &str, credentials_dir: Option<&std::path::Path>) -> String {
    let text = format!("{SERVICES}{mesh}");
    let output = generate(
        &Inputs::from_text("mesh.yaml", &text),
        &options(credentials_dir),
    )
    .unwrap_or_else(|d| panic!("{d}"));
    String::from_utf8(output.files["envoy.yaml"].clone()).expect("UTF-8")
}

/// Errors and warnings of `mesh`, whether or not it generates.
fn diagnose(mesh: &str, credentials_dir: Option<&std::path::Path>) -> String {
    let text = format!("{SERVICES}{mesh}");
    match generate(
        &Inputs::from_text("mesh.yaml", &text),
        &options(credentials_dir),
    ) {
        Ok(output) => output.warnings.to_string(),
        Err(d) => d.to_string(),
    }
}

/// The YAML of cluster `name`, up to the next cluster.
fn cluster(yaml: &str, name: &str) -> String {
    let from = yaml
        .find(&format!("  - name: \"{name}\""))
        .unwrap_or_else(|| panic!("no cluster {name} in\n{yaml}"));
    let rest = &yaml[from..];
    let end = ["\n  - name: ", "\n  listeners:"]
        .iter()
        .filter_map(|m| rest[1..].find(m))
        .min()
        .map_or(rest.len(), |i| i + 1);
    rest[..end].to_owned()
}

#[test]
fn retry_budget_and_proxy_protocol_wrapping_tls() {
    let yaml = envoy_yaml(
        "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api.internal
  trafficPolicy:
    connectionPool: {http: {http2MaxRequests: 100}}
    retryBudget: {percent: 25, minRetryConcurrency: 5}
    proxyProtocol: {version: V2}
    tls: {mode: SIMPLE, caCertificates: /certs/ca.crt}
  subsets:
  - name: plain
    labels: {}
    trafficPolicy:
      tls: {mode: DISABLE}
      proxyProtocol: {}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web.internal
  trafficPolicy:
    retryBudget: {minRetryConcurrency: 2}
",
        None,
    );
    // ServiceEntry subjectAltNames verify the server (the DestinationRule names none), the
    // SPIFFE identity as a URI SAN; the PROXY header goes before the TLS handshake.
    insta::assert_snapshot!(
        "retry_budget_proxy_protocol_tls",
        cluster(&yaml, "outbound|8443||api.internal")
    );
    // A subset's proxyProtocol (V1 by default) wraps a plain socket; the budget is the host's.
    insta::assert_snapshot!(
        "proxy_protocol_plain_subset",
        cluster(&yaml, "outbound|8443|plain|api.internal")
    );
    let web = cluster(&yaml, "outbound|8080||web.internal");
    assert!(
        web.contains("retry_budget:\n          min_retry_concurrency: 2"),
        "{web}"
    );
    assert!(!web.contains("budget_percent"), "{web}");
    assert!(!web.contains("transport_socket"), "{web}");
}

#[test]
fn credential_name_reads_the_client_secret_from_the_credentials_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (secret, files) in [
        ("client", &["tls.crt", "tls.key", "ca.crt"][..]),
        ("client-no-ca", &["tls.crt", "tls.key"][..]),
        ("server-ca", &["ca.crt"][..]),
    ] {
        std::fs::create_dir(dir.path().join(secret)).expect("secret dir");
        for f in files {
            std::fs::write(dir.path().join(secret).join(f), "pem").expect("file");
        }
    }
    let yaml = envoy_yaml(
        "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api.internal
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: client}
  subsets:
  - name: no-ca
    labels: {}
    trafficPolicy:
      tls: {mode: MUTUAL, credentialName: client-no-ca, subjectAltNames: [api.internal]}
  - name: simple
    labels: {}
    trafficPolicy:
      tls: {mode: SIMPLE, credentialName: server-ca}
",
        Some(dir.path()),
    );
    let root = std::path::absolute(dir.path()).expect("absolute");
    let redacted = yaml.replace(&root.display().to_string(), "<DIR>");
    insta::assert_snapshot!(
        "credential_name_mutual",
        cluster(&redacted, "outbound|8443||api.internal")
    );
    insta::assert_snapshot!(
        "credential_name_mutual_without_ca",
        cluster(&redacted, "outbound|8443|no-ca|api.internal")
    );
    insta::assert_snapshot!(
        "credential_name_simple",
        cluster(&redacted, "outbound|8443|simple|api.internal")
    );
}

/// Gateways `edge-a` (port 8081) and `edge-b` (port 8082) for `shop.example.com`.
fn two_gateways() -> String {
    common::fixture("two-gateways.yaml", &[("HOST", "shop.example.com")])
}

#[test]
fn match_gateways_keeps_a_block_to_the_listeners_of_its_gateways() {
    let two_gateways = two_gateways();
    let yaml = envoy_yaml(
        &format!(
            "{two_gateways}\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [edge-a, default/edge-b]
  http:
  - name: beta
    match:
    - {{headers: {{x-beta: {{exact: \"1\"}}}}, gateways: [edge-a]}}
    - {{uri: {{prefix: /beta}}, gateways: [default/edge-b]}}
    route: [{{destination: {{host: api.internal}}}}]
  - name: only-a
    match: [{{gateways: [edge-a]}}]
    route: [{{destination: {{host: web.internal}}}}]
  - name: rest
    route: [{{destination: {{host: web.internal}}}}]
"
        ),
        None,
    );
    // The router config of each gateway's listener: edge-a keeps the header block and the
    // catch-all `only-a` rule; edge-b keeps the prefix block and has no `only-a` at all.
    let router_configs: Vec<String> = yaml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("value: "))
        .filter(|v| v.contains("shop.example.com"))
        .map(|v| {
            let text: String = serde_json::from_str(v).expect("a JSON string");
            let config: serde_json::Value = serde_json::from_str(&text).expect("router JSON");
            let host = &config["virtualHosts"][0];
            format!("{}: {}", host["domains"][1], host["rules"])
        })
        .collect();
    insta::assert_snapshot!("match_gateways_router_configs", router_configs.join("\n"));
}

#[test]
fn mistakes_in_upstream_policy_fields() {
    let two_gateways = two_gateways();
    insta::assert_snapshot!(
        "mistakes",
        diagnose(
            &format!(
                "{two_gateways}\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api}}
spec:
  host: api.internal
  trafficPolicy:
    connectionPool: {{http: {{maxRetries: 3}}}}
    retryBudget: {{percent: 120, budgetInterval: 10s, minRetryConcurrency: 1}}
    proxyProtocol: {{version: V3}}
    tls: {{mode: MUTUAL, credentialName: client, clientCertificate: /c.crt}}
  subsets:
  - name: s
    labels: {{}}
    trafficPolicy:
      tls: {{mode: SIMPLE, credentialName: ca-only}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [edge-a]
  http:
  - match:
    - {{gateways: [edge-c]}}
    - {{gateways: [edge-b]}}
    - {{sourceNamespace: prod}}
    route: [{{destination: {{host: web.internal}}}}]
"
            ),
            None,
        )
    );
}

#[test]
fn missing_secret_files_are_reported_with_the_expected_layout() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("client")).expect("secret dir");
    std::fs::write(dir.path().join("client/tls.crt"), "pem").expect("file");
    let out = diagnose(
        "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api.internal
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: client}
  subsets:
  - name: s
    labels: {}
    trafficPolicy:
      tls: {mode: SIMPLE, credentialName: client}
",
        Some(dir.path()),
    );
    let root = std::path::absolute(dir.path()).expect("absolute");
    insta::assert_snapshot!(
        "missing_secret_files",
        out.replace(&root.display().to_string(), "<DIR>")
            .replace(&dir.path().display().to_string(), "<DIR>")
    );
}

/// The istio target hands DestinationRules to Istio as written: a `credentialName` needs no
/// `--credentials-dir` there (Istio reads the secret), and stays in the output.
#[test]
fn istio_target_leaves_credential_name_to_istio() {
    let text = format!(
        "{SERVICES}\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api}}
spec:
  host: api.internal
  trafficPolicy:
    tls: {{mode: MUTUAL, credentialName: client}}
"
    );
    let options = Options {
        target: sluice::Target::Istio(sluice::emit::istio_target::IstioOptions::default()),
        ..options(None)
    };
    let output = generate(&Inputs::from_text("mesh.yaml", &text), &options)
        .unwrap_or_else(|d| panic!("{d}"));
    let written: String = output
        .files
        .values()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(written.contains("credentialName: client"), "{written}");
    // The envoy target cannot: it has to read the files.
    let out = diagnose(
        "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api.internal
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: client}
",
        None,
    );
    assert!(out.contains("needs `--credentials-dir`"), "{out}");
}

/// The istio target's one router config serves every gateway, so it refuses match blocks kept
/// to some gateways (with the position and what to do instead).
#[test]
fn istio_target_refuses_match_gateways() {
    let two_gateways = two_gateways();
    let text = format!(
        "{SERVICES}{two_gateways}\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [edge-a, edge-b]
  http:
  - match: [{{gateways: [edge-a]}}]
    route: [{{destination: {{host: web.internal}}}}]
"
    );
    let options = Options {
        target: sluice::Target::Istio(sluice::emit::istio_target::IstioOptions::default()),
        ..options(None)
    };
    let Err(d) = generate(&Inputs::from_text("mesh.yaml", &text), &options) else {
        panic!("the istio target accepted match.gateways");
    };
    insta::assert_snapshot!("istio_target_match_gateways", d.to_string());
}
