//! `sluice generate --suite` through a real Envoy 1.40: the one `sluice-suite` filter
//! (`sluice_suite.wasm`) in place of the chain `sluice-router -> sluice-canary -> sluice-fault ->
//! sluice-breaker`, on the mesh of `chain.rs` (header rule, sticky 90/10 split, faults, a
//! breaker per subset). Each behaviour runs on both layouts generated from the same YAML, with
//! the same assertions: the suite must behave as the chain does. Every example also generates
//! with `--suite` into a config Envoy accepts (`--mode validate` loads the module and runs its
//! `on_configure`).
//!
//! Needs the modules: `cargo xtask build-wasm` (the four filters and sluice_suite.wasm).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice::{Inputs, Options};
use sluice_core::wire;
use sluice_integration::binomial::assert_plausible;
use sluice_integration::client::{self, Request};
use sluice_integration::envoy::Envoy;
use sluice_integration::upstream::{Behavior, Upstream};
use sluice_integration::{mesh, repo_root, wasm};

const LISTENER: &str = "listener_9080";

/// The two layouts, by the value of `Options::suite`.
const LAYOUTS: [bool; 2] = [false, true];

fn layout_name(suite: bool) -> &'static str {
    if suite { "suite" } else { "chain" }
}

/// The suite module, or a failure naming the command that builds it.
fn suite_module() -> PathBuf {
    wasm::module("suite").unwrap_or_else(|e| panic!("{e:#}"))
}

fn layout_options(suite: bool) -> Options {
    Options {
        suite,
        ..mesh::options()
    }
}

/// Generates `mesh` in the layout `suite`, checks which sluice filters it attaches, starts Envoy.
fn start(mesh_yaml: &str, suite: bool) -> Envoy {
    if suite {
        suite_module();
    }
    let yaml = mesh::envoy_yaml_with(
        &Inputs::from_text("mesh.yaml", mesh_yaml),
        &layout_options(suite),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{mesh_yaml}"));
    let chain = wire::FILTERS.map(wire::filter_name);
    for filter in chain {
        assert_eq!(
            yaml.contains(&format!("name: {filter}\n")),
            !suite,
            "{filter} in the {} layout:\n{yaml}",
            layout_name(suite)
        );
    }
    assert_eq!(
        yaml.matches("name: sluice-suite\n").count(),
        usize::from(suite),
        "{yaml}"
    );
    Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e:#}\n{yaml}"))
}

fn get(envoy: &Envoy, headers: &[(&str, &str)]) -> client::Response {
    client::get(envoy.listener_port(LISTENER), "shop", "/", headers)
        .unwrap_or_else(|e| panic!("GET {headers:?}: {e:#}\n{}", envoy.log()))
}

#[test]
fn header_route_split_and_sticky_users_as_in_the_chain() {
    for suite in LAYOUTS {
        let layout = layout_name(suite);
        let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
        let envoy = start(&mesh::chain_mesh(&v1, &v2), suite);
        for _ in 0..5 {
            let r = get(&envoy, &[("x-tester", "yes")]);
            assert_eq!(
                (r.status, r.served_by()),
                (200, Some("shop-v2")),
                "{layout}"
            );
        }
        let port = envoy.listener_port(LISTENER);
        // Without the sticky key every request is drawn afresh: 90/10.
        let anonymous = vec![Request::get(port, "/").authority("shop"); 1000];
        let responses: Vec<client::Response> = client::send_many(anonymous, 16)
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{layout}: {e:#}\n{}", envoy.log())))
            .collect();
        let counts = client::served_by_counts(&responses);
        assert_eq!(
            counts.values().sum::<u64>(),
            1000,
            "{layout}: every request served: {counts:?}"
        );
        let on_v2 = counts.get("shop-v2").copied().unwrap_or(0);
        assert_plausible(&format!("{layout}: requests on v2"), on_v2, 1000, 0.1);
        // 1,000 users, three requests each: every user stays on one member, about 10% on v2.
        let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        let requests: Vec<Request> = (0..3)
            .flat_map(|_| {
                users.iter().map(|u| {
                    Request::get(port, "/")
                        .authority("shop")
                        .header("end-user", u)
                })
            })
            .collect();
        let responses: Vec<client::Response> = client::send_many(requests, 16)
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{layout}: {e:#}\n{}", envoy.log())))
            .collect();
        let mut member_of: BTreeMap<&str, &str> = BTreeMap::new();
        for (i, r) in responses.iter().enumerate() {
            let user = users[i % users.len()].as_str();
            let served = r
                .served_by()
                .unwrap_or_else(|| panic!("{layout}: status {}", r.status));
            let first = *member_of.entry(user).or_insert(served);
            assert_eq!(first, served, "{layout}: {user} moved between members");
        }
        let users_on_v2 = member_of.values().filter(|m| **m == "shop-v2").count();
        assert_plausible(
            &format!("{layout}: users on v2"),
            users_on_v2 as u64,
            1000,
            0.1,
        );
    }
}

#[test]
fn faults_apply_to_their_rules_only_as_in_the_chain() {
    for suite in LAYOUTS {
        let layout = layout_name(suite);
        let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
        let envoy = start(&mesh::chain_mesh(&v1, &v2), suite);
        for _ in 0..20 {
            let r = get(&envoy, &[("x-fault", "abort")]);
            assert_eq!(
                r.status, 555,
                "{layout}: abort 100% gives the configured status"
            );
            assert_eq!(r.served_by(), None, "{layout}");
        }
        assert_eq!(
            v1.request_count(),
            0,
            "{layout}: aborted requests never reach the upstream"
        );
        let start = Instant::now();
        let r = get(&envoy, &[("x-fault", "delay")]);
        let elapsed = start.elapsed();
        assert_eq!(
            (r.status, r.served_by()),
            (200, Some("shop-v1")),
            "{layout}"
        );
        // A lower bound only: a slow machine makes it longer, never shorter.
        assert!(
            elapsed >= Duration::from_millis(1500),
            "{layout}: delayed only {elapsed:?}"
        );
        let r = get(&envoy, &[("x-tester", "yes")]);
        assert_eq!(
            (r.status, r.served_by()),
            (200, Some("shop-v2")),
            "{layout}: a rule without a fault is untouched"
        );
    }
}

#[test]
fn breaker_opens_on_the_failing_subset_and_the_split_fails_over_as_in_the_chain() {
    for suite in LAYOUTS {
        let layout = layout_name(suite);
        let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
        let envoy = start(&mesh::chain_mesh(&v1, &v2), suite);
        v2.set_behavior(Behavior::Status(500));
        // The v2 override (consecutiveErrors: 3): three errors pass, then the breaker opens.
        for _ in 0..3 {
            let r = get(&envoy, &[("x-tester", "yes")]);
            assert_eq!(
                (r.status, r.served_by()),
                (500, Some("shop-v2")),
                "{layout}"
            );
        }
        for _ in 0..5 {
            let r = get(&envoy, &[("x-tester", "yes")]);
            assert_eq!(r.status, 503, "{layout}: {}", envoy.log());
            let why = r.header_str("x-sluice-breaker").unwrap_or_default();
            assert_eq!(why, "open", "{layout}: x-sluice-breaker");
        }
        assert_eq!(
            v2.request_count(),
            3,
            "{layout}: an open breaker sends nothing upstream"
        );
        // The split's v2 share goes to v1: every user, those sticky on v2 included.
        let port = envoy.listener_port(LISTENER);
        let requests: Vec<Request> = (0..300)
            .map(|i| {
                Request::get(port, "/")
                    .authority("shop")
                    .header("end-user", format!("user-{i}"))
            })
            .collect();
        for r in client::send_many(requests, 16) {
            let r = r.unwrap_or_else(|e| panic!("{layout}: {e:#}"));
            assert_eq!(
                (r.status, r.served_by()),
                (200, Some("shop-v1")),
                "{layout}"
            );
        }
        assert_eq!(v2.request_count(), 3, "{layout}");
    }
}

/// Every example generated with `--suite` (the modules referenced where the harness finds them)
/// is accepted by Envoy, which loads sluice_suite.wasm and runs `on_configure` on each config.
#[test]
fn every_example_with_suite_passes_envoy_validate() {
    suite_module();
    let examples = repo_root().join("examples");
    let mut inputs: Vec<(String, Vec<PathBuf>)> = ["bookinfo", "demo", "native-traffic"]
        .iter()
        .map(|name| (name.to_string(), vec![examples.join(name)]))
        .collect();
    for variant in ["fault-injection-abort", "scenario-canary-90-10"] {
        inputs.push((
            format!("ecommerce/{variant}"),
            vec![
                examples.join("ecommerce/common"),
                examples.join(format!("ecommerce/{variant}.yaml")),
            ],
        ));
    }
    let mut failures = Vec::new();
    for (name, paths) in inputs {
        let inputs = Inputs::read(&paths).unwrap_or_else(|e| panic!("{name}: {e}"));
        let yaml = mesh::envoy_yaml_with(&inputs, &layout_options(true))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(yaml.contains("root_id: sluice_suite"), "{name}:\n{yaml}");
        if let Err(e) = Envoy::validate_yaml(&yaml) {
            failures.push(format!("{name}: {e:#}"));
        }
    }
    assert!(
        failures.is_empty(),
        "Envoy refused:\n{}",
        failures.join("\n")
    );
}
