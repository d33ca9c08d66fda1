//! The harness itself, proven against a real Envoy: if these fail, no other integration test
//! means anything.

use std::time::Duration;

use sluice_integration::bootstrap::{Bootstrap, LISTENER_NAME};
use sluice_integration::client::{self, NO_HEADERS, Request};
use sluice_integration::envoy::{self, Envoy, EnvoyOptions};
use sluice_integration::upstream::{Behavior, Upstream};
use sluice_integration::wasm;

fn proxy_to(upstream: &Upstream) -> Envoy {
    let config = Bootstrap::new()
        .cluster("backend", upstream.port())
        .route_to_cluster("backend")
        .route_timeout(Duration::from_secs(2))
        .render();
    Envoy::start(&config).unwrap()
}

#[test]
fn provisions_envoy_1_40() {
    let binary = envoy::binary().unwrap();
    let version = envoy::version(&binary).unwrap();
    assert!(version.contains("/1.40."), "{version}");
}

#[test]
fn plain_proxy_reaches_the_upstream_over_http1_and_h2c() {
    let upstream = Upstream::start("v1");
    let envoy = proxy_to(&upstream);
    let port = envoy.listener_port(LISTENER_NAME);
    assert_ne!(port, 0);
    assert_ne!(port, envoy.admin_port());

    let response = client::get(port, "reviews", "/hello?x=1", &[("end-user", "jason")]).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.served_by(), Some("v1"));
    assert_eq!(response.text(), "v1");

    let h2 = client::send(&Request::get(port, "/h2").authority("ratings").h2c()).unwrap();
    assert_eq!(h2.status, 200);
    assert_eq!(h2.served_by(), Some("v1"));

    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/hello?x=1");
    assert_eq!(seen[0].authority.as_deref(), Some("reviews"));
    assert_eq!(seen[0].header("end-user"), Some(&b"jason"[..]));
    assert_eq!(seen[1].authority.as_deref(), Some("ratings"));

    // Counters come from the admin API by exact name.
    let total = envoy
        .wait_for_stat(
            "cluster.backend.upstream_rq_total",
            |v| v >= 2,
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(envoy.stat("cluster.backend.upstream_rq_tota"), None);
    assert!(
        envoy
            .prometheus()
            .unwrap()
            .contains("envoy_cluster_upstream_rq_total")
    );
}

#[test]
fn non_utf8_header_values_reach_the_upstream_as_bytes() {
    let upstream = Upstream::start("v1");
    let envoy = proxy_to(&upstream);
    let port = envoy.listener_port(LISTENER_NAME);
    let raw: &[u8] = b"caf\xe9\xff";
    let response = client::get(port, "reviews", "/", &[("x-raw", raw)]).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(upstream.requests()[0].header("x-raw"), Some(raw));
}

#[test]
fn internal_headers_are_stripped_before_the_upstream() {
    let upstream = Upstream::start("v1");
    let envoy = proxy_to(&upstream);
    let port = envoy.listener_port(LISTENER_NAME);
    client::get(
        port,
        "reviews",
        "/",
        &[("x-sluice-cluster", "evil"), ("x-sluice-rule", "r")],
    )
    .unwrap();
    let seen = &upstream.requests()[0];
    assert!(!seen.has_header("x-sluice-cluster"));
    assert!(!seen.has_header("x-sluice-rule"));
}

#[test]
fn upstream_behaviours_show_through_envoy() {
    let upstream = Upstream::start("v1");
    let envoy = proxy_to(&upstream);
    let port = envoy.listener_port(LISTENER_NAME);
    let get = || client::get(port, "reviews", "/", NO_HEADERS).unwrap();

    upstream.set_behavior(Behavior::Status(503));
    let failed = get();
    assert_eq!((failed.status, failed.served_by()), (503, Some("v1")));

    upstream.set_behavior(Behavior::FailNext {
        count: 2,
        status: 500,
    });
    let statuses: Vec<u16> = (0..3).map(|_| get().status).collect();
    assert_eq!(statuses, [500, 500, 200]);

    // Reset: Envoy answers itself (no x-served-by), with an upstream-reset flag.
    upstream.set_behavior(Behavior::Reset);
    let reset = get();
    assert_eq!(reset.status, 503);
    assert_eq!(reset.served_by(), None);

    // Hang: Envoy's 2 s route timeout answers 504.
    upstream.set_behavior(Behavior::Hang);
    let hung = get();
    assert_eq!((hung.status, hung.served_by()), (504, None));

    upstream.set_behavior(Behavior::Delay(Duration::from_millis(200)));
    let delayed = get();
    assert_eq!((delayed.status, delayed.served_by()), (200, Some("v1")));
}

#[test]
fn grpc_over_h2c_reports_the_status_from_trailers() {
    let upstream = Upstream::start("grpc-v1");
    let config = Bootstrap::new()
        .cluster_h2("grpc", upstream.port())
        .route_to_cluster("grpc")
        .render();
    let envoy = Envoy::start(&config).unwrap();
    let port = envoy.listener_port(LISTENER_NAME);
    let response = client::grpc(
        port,
        "greeter",
        "/helloworld.Greeter/SayHello",
        b"hi",
        NO_HEADERS,
    )
    .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.grpc_status(), Some(0));
    assert_eq!(response.served_by(), Some("grpc-v1"));
    let seen = &upstream.requests()[0];
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.body.as_ref(), b"\0\0\0\0\x02hi");
}

#[test]
fn many_requests_in_parallel_are_counted_by_upstream() {
    let upstream = Upstream::start("v1");
    let envoy = proxy_to(&upstream);
    let port = envoy.listener_port(LISTENER_NAME);
    let responses = client::get_many(port, "reviews", "/", NO_HEADERS, 200).unwrap();
    let counts = client::served_by_counts(&responses);
    assert_eq!(counts.get("v1"), Some(&200));
    assert_eq!(upstream.request_count(), 200);
}

#[test]
fn a_missing_wasm_module_names_the_command_that_builds_it() {
    let empty = tempfile::tempdir().unwrap();
    let error = wasm::module_in(empty.path(), "canary")
        .unwrap_err()
        .to_string();
    assert!(error.contains("sluice_canary.wasm"), "{error}");
    assert!(error.contains("cargo xtask build-wasm"), "{error}");
    let unknown = wasm::module_in(empty.path(), "nope")
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("router, canary, fault, breaker"),
        "{unknown}"
    );
}

#[test]
fn a_refused_config_returns_envoys_log() {
    // A route to a cluster that does not exist: Envoy refuses the static config at startup.
    let config = Bootstrap::new()
        .route_to_cluster("no-such-cluster")
        .render();
    let log = Envoy::start_expect_failure(&config);
    assert!(log.contains("no-such-cluster"), "{log}");
    let error = Envoy::start(&config).unwrap_err().to_string();
    assert!(error.contains("exited during startup"), "{error}");
}

#[test]
fn validate_mode_accepts_a_good_config_and_explains_a_bad_one() {
    let good = Bootstrap::new()
        .cluster("backend", 9)
        .route_to_cluster("backend")
        .render();
    Envoy::validate_yaml(&good).unwrap();
    let bad = good.replace("\"STATIC\"", "\"NO_SUCH_TYPE\"");
    let error = Envoy::validate_yaml(&bad).unwrap_err().to_string();
    assert!(error.contains("NO_SUCH_TYPE"), "{error}");
}

/// A router config sending everything to `cluster` under rule `to-v1`, built from the core
/// types so it stays what the router parses.
fn router_to(cluster: &str) -> String {
    use sluice_core::router::{Destination, RouterConfig, Rule, VirtualHost};
    let config = RouterConfig {
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            rules: vec![Rule {
                name: "to-v1".into(),
                match_: Vec::new(),
                route: Destination::Cluster(cluster.into()),
            }],
        }],
    };
    serde_json::to_string(&config).unwrap()
}

#[test]
fn stats_tags_turn_filter_metric_name_parts_into_prometheus_labels() {
    let upstream = Upstream::start("v1");
    let bootstrap = Bootstrap::new()
        .cluster("backend", upstream.port())
        .wasm_filter("router", &router_to("backend"))
        .route_cluster_header()
        .render();
    let envoy = Envoy::start(&bootstrap).unwrap();
    let port = envoy.listener_port(LISTENER_NAME);
    let response = client::get(port, "reviews", "/", NO_HEADERS).unwrap();
    assert_eq!(response.served_by(), Some("v1"));

    let metric = sluice_core::metrics::router_rule_matched("to-v1");
    let value = envoy
        .wait_for_stat(
            &format!("wasmcustom.{metric}"),
            |v| v >= 1,
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(value, 1);
    let prometheus = envoy.prometheus().unwrap();
    assert!(
        prometheus
            .lines()
            .any(|l| l == r#"sluice_router_matched{rule="to-v1"} 1"#),
        "{prometheus}"
    );
}

#[test]
fn relative_wasm_paths_resolve_against_the_working_directory() {
    // Generated configs name modules relative to the repository root, where users run Envoy;
    // here the module's own directory plays that part.
    let module = wasm::module("router").unwrap(); // fails with the build command if missing
    let module_dir = module.parent().unwrap().to_path_buf();
    let relative = std::path::Path::new(module.file_name().unwrap());
    let upstream = Upstream::start("v1");
    let bootstrap = Bootstrap::new()
        .cluster("backend", upstream.port())
        .wasm_filter_at("router", relative, &router_to("backend"))
        .render();

    let envoy = Envoy::start_with(EnvoyOptions {
        config_yaml: bootstrap.clone(),
        working_dir: Some(module_dir.clone()),
        ..EnvoyOptions::default()
    })
    .unwrap();
    let port = envoy.listener_port(LISTENER_NAME);
    let response = client::get(port, "reviews", "/", NO_HEADERS).unwrap();
    assert_eq!(response.served_by(), Some("v1"));

    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("envoy.yaml");
    std::fs::write(&config_path, &bootstrap).unwrap();
    let output = Envoy::validate_in(&config_path, &module_dir).unwrap();
    assert!(output.status.success(), "{output:?}");
    // From elsewhere the same config does not load: the path really is relative.
    let elsewhere = Envoy::validate_in(&config_path, dir.path()).unwrap();
    assert!(!elsewhere.status.success());
}
