//! Focused inputs and their generated Envoy config (insta snapshots), the plugin configs
//! round-tripping through the filters' own types, and generation time for a large mesh.

mod common;

use common::{envoy_yaml, options};
use sluice::{Inputs, generate};

const CANARY: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop}
spec:
  hosts: [shop]
  ports: [{number: 8000, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}, weight: 3}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop}
spec:
  host: shop
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 2s}
      http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 2}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop]
  http:
  - name: testers
    match: [{headers: {x-tester: {exact: 'yes'}}}]
    route: [{destination: {host: shop, subset: v2}}]
  - route:
    - {destination: {host: shop, subset: v1}, weight: 90}
    - {destination: {host: shop, subset: v2}, weight: 10}
    timeout: 2.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: 'gateway-error,503'}
";

#[test]
fn canary_with_policies() {
    insta::assert_snapshot!(envoy_yaml(CANARY));
}

#[test]
fn dns_service_behind_a_gateway() {
    insta::assert_snapshot!(envoy_yaml(
        "\
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: httpbin}
spec:
  hosts: [httpbin.org]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: edge}
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ['*.example.com']
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [api.example.com]
  gateways: [edge]
  http:
  - match: [{uri: {prefix: /status}, method: {exact: GET}}]
    route: [{destination: {host: httpbin.org}}]
"
    ));
}

#[test]
fn plugin_configs_parse_back_with_the_filters_types() {
    let (resources, diags) = sluice::parse::parse(&Inputs::from_text("m.yaml", CANARY));
    assert!(diags.is_empty(), "{diags:?}");
    let (mesh, diags) = sluice::model::build(&resources);
    assert!(diags.is_empty(), "{diags:?}");
    let listener = &mesh.listeners[&8000];
    let router = sluice::xds::resources::router_config(listener);
    let json = serde_json::to_string(&router).expect("serializes");
    let back: sluice_core::router::RouterConfig = serde_json::from_str(&json).expect("parses");
    assert_eq!(back, router);
    let compiled = sluice_core::router::CompiledRouter::compile(&back).expect("compiles");
    let names: Vec<&str> = compiled.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["testers", "default.shop.1"]);
    let canary = sluice::xds::resources::canary_config(listener).expect("a split");
    let json = serde_json::to_vec(&canary).expect("serializes");
    let compiled =
        sluice_core::canary::CompiledCanary::from_json(&json).expect("the canary accepts it");
    assert_eq!(compiled.splits[0].name, "default.shop.1");
    assert_eq!(compiled.splits[0].weights, [90, 10]);
}

/// 1,000 services, each with two subsets and a header rule: the builder stays linear.
#[test]
fn a_thousand_services_generate_quickly() {
    let mut mesh = String::new();
    for i in 0..1000 {
        mesh.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc{i}}}\nspec:\n  hosts: [svc{i}]\n  ports: [{{number: 8000, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints:\n  - {{address: 10.0.{}.{}, labels: {{version: v1}}}}\n  - {{address: 10.1.{}.{}, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc{i}}}\nspec:\n  host: svc{i}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc{i}}}\nspec:\n  hosts: [svc{i}]\n  http:\n  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]\n    route: [{{destination: {{host: svc{i}, subset: v2}}}}]\n  - route: [{{destination: {{host: svc{i}, subset: v1}}}}]\n---\n",
            i / 250, i % 250, i / 250, i % 250
        ));
    }
    let inputs = Inputs::from_text("big.yaml", &mesh);
    let start = std::time::Instant::now();
    let output = generate(&inputs, &options()).unwrap_or_else(|d| panic!("{d}"));
    let elapsed = start.elapsed();
    eprintln!(
        "1000 services: {elapsed:?}, envoy.yaml {} bytes",
        output.files["envoy.yaml"].len()
    );
    // Generous bound for an unoptimised build on a loaded 2-core machine; the release figure is
    // in the report (`cargo test --release -p sluice --test generate -- --nocapture`).
    assert!(elapsed.as_secs() < 20, "took {elapsed:?}");
}

#[test]
fn workload_entries_give_endpoints_and_gateways_resolve_across_namespaces() {
    let mesh = "\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: shop}
spec: {address: 10.0.0.7, labels: {app: cart, version: v1}, ports: {http: 9000}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-2, namespace: other}
spec: {address: 10.9.9.9, labels: {app: cart, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart.shop.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: cart}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ['shop/*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart.example.com]
  gateways: [istio-system/ingress]
  http:
  - route: [{destination: {host: cart}}]
";
    let (resources, diags) = sluice::parse::parse(&Inputs::from_text("m.yaml", mesh));
    assert!(diags.is_empty(), "{diags:?}");
    let (model, diags) = sluice::model::build(&resources);
    assert!(diags.is_empty(), "{diags:?}");
    let cluster = &model.clusters["outbound|80||cart.shop.svc.cluster.local"];
    let endpoints: Vec<(&str, u32)> = cluster
        .endpoints
        .iter()
        .map(|e| (e.address.as_str(), e.port))
        .collect();
    // Only the WorkloadEntry of the ServiceEntry's namespace, on its named port.
    assert_eq!(endpoints, [("10.0.0.7", 9000)]);
    let listener = &model.listeners[&8080];
    assert_eq!(
        listener.virtual_hosts[0].domains,
        ["cart.example.com", "cart.example.com:8080"]
    );
    assert_eq!(listener.virtual_hosts[0].rules[0].name, "shop.cart.0");
    assert_eq!(
        listener.virtual_hosts[0].rules[0].target,
        sluice::model::Target::Cluster("outbound|80||cart.shop.svc.cluster.local".into()),
        "the short name `cart` resolves in the VirtualService's namespace"
    );
}

/// The canary, fault and breaker plugin configs: emitted from the sluice annotations and
/// Istio's `fault`, they parse back and compile with the filters' own types.
#[test]
fn fault_breaker_and_sticky_canary_configs_parse_back_with_the_filters_types() {
    let mesh = "\
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
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: shop
  annotations:
    sluice.dev/breaker: |
      consecutiveErrors: 5
      countAs: [5xx, reset]
      subsets:
        v2: {consecutiveErrors: 2}
spec:
  host: shop
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
  annotations:
    sluice.dev/canary: |
      \"1\":
        sticky: {header: end-user}
        failover: false
    sluice.dev/fault: |
      maxActiveFaults: 7
spec:
  hosts: [shop]
  http:
  - name: broken
    match: [{headers: {x-fault: {exact: 'yes'}}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 50}}}
    route: [{destination: {host: shop, subset: v1}}]
  - route:
    - {destination: {host: shop, subset: v1}, weight: 90}
    - {destination: {host: shop, subset: v2}, weight: 10}
";
    let inputs = Inputs::from_text("m.yaml", mesh);
    let (resources, diags) = sluice::parse::parse(&inputs);
    assert!(diags.is_empty(), "{diags:?}");
    let (model, diags) = sluice::model::build(&resources);
    assert!(diags.is_empty(), "{diags:?}");
    let listener = &model.listeners[&8000];

    let canary = sluice::xds::resources::canary_config(listener).expect("a split");
    let json = serde_json::to_vec(&canary).expect("serializes");
    let compiled = sluice_core::canary::CompiledCanary::from_json(&json).expect("canary accepts");
    assert_eq!(compiled.splits[0].name, "default.shop.1");
    assert!(compiled.splits[0].sticky.is_some());
    assert!(!compiled.splits[0].failover);

    let fault = sluice::xds::filters::fault_config(listener).expect("a fault");
    let json = serde_json::to_vec(&fault).expect("serializes");
    let plan = sluice_core::fault::plan::FaultPlan::from_json(&json).expect("fault accepts");
    let rules: Vec<&str> = plan.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(rules, ["broken"]);
    let back = sluice_core::fault::config::parse(&json).expect("parses");
    assert!(back.after_router);
    assert_eq!(back.max_active_faults, 7);

    let breaker = sluice::xds::filters::breaker_config(listener, &model).expect("breakers");
    let json = serde_json::to_vec(&breaker).expect("serializes");
    let compiled = sluice_core::breaker::BreakerConfig::from_json(&json)
        .and_then(|c| c.compile())
        .expect("breaker accepts");
    assert!(compiled.after_router);
    let errors = |cluster: &str| {
        assert!(
            compiled.clusters().any(|c| c == cluster),
            "{cluster} listed"
        );
        compiled.policy_for(cluster).unwrap().consecutive_errors
    };
    assert_eq!(errors("outbound|8000|v1|shop"), Some(5));
    assert_eq!(
        errors("outbound|8000|v2|shop"),
        Some(2),
        "the subset override wins"
    );

    // Chain order in the bootstrap.
    let yaml = envoy_yaml(mesh);
    let at = |name: &str| yaml.find(&format!("name: {name}\n")).expect(name);
    assert!(at("sluice-router") < at("sluice-canary"));
    assert!(at("sluice-canary") < at("sluice-fault"));
    assert!(at("sluice-fault") < at("sluice-breaker"));
    assert!(at("sluice-breaker") < at("envoy.filters.http.router"));

    // Breaker replies name no cluster unless `--detailed-replies`.
    assert!(!yaml.contains("detailedReplies"), "off by default");
    let detailed = generate(
        &Inputs::from_text("m.yaml", mesh),
        &sluice::Options {
            detailed_replies: true,
            ..options()
        },
    )
    .expect("generates");
    let detailed = String::from_utf8_lossy(&detailed.files["envoy.yaml"]).into_owned();
    assert!(
        detailed.contains(r#"\"detailedReplies\":true"#),
        "{detailed}"
    );
}
