//! The online explanation (issue 30) through a real Envoy: the suite module's `debug` section
//! names a header and a secret; a request carrying it gets `x-sluice-explain` with the rule,
//! its source position, the member and bucket, the fault decision and the breaker state. Any
//! other request gets nothing, and the debug header never reaches the upstream, whatever its
//! value.
//!
//! Needs the modules: `cargo xtask build-wasm`.

use serde_json::{Value, json};
use sluice_integration::bootstrap::Bootstrap;
use sluice_integration::client::{self, Request, Response};
use sluice_integration::envoy::Envoy;
use sluice_integration::upstream::{Behavior, Upstream};

const LISTENER: &str = "listener_test";
const EXPLAIN: &str = sluice_core::suite::debug::EXPLAIN_HEADER;
const DEBUG_HEADER: &str = "x-sluice-debug";
const SECRET: &str = "correct-horse-battery-staple-42";

/// Header routing to v2, a delayed rule, a rule aborting 555 and a 90/10 split sticky by
/// `end-user`; breakers on both members; positions for the four rules.
fn config(debug: Value) -> Value {
    json!({
        "router": {"virtualHosts": [{"name": "shop", "domains": ["shop"], "rules": [
            {"name": "testers", "match": [{"headers": {"x-tester": {"exact": "yes"}}}],
             "route": {"cluster": "shop-v2"}},
            {"name": "slow", "match": [{"headers": {"x-fault": {"exact": "delay"}}}],
             "route": {"cluster": "shop-v1"}},
            {"name": "broken", "match": [{"headers": {"x-fault": {"exact": "abort"}}}],
             "route": {"cluster": "shop-v1"}},
            {"name": "rollout", "route": {"split": "rollout"}}]}]},
        "canary": {"afterRouter": true, "splits": [{"name": "rollout",
            "members": [{"cluster": "shop-v1", "weight": 90}, {"cluster": "shop-v2", "weight": 10}],
            "sticky": {"header": "end-user"}}]},
        "fault": {"afterRouter": true, "faults": [
            {"rule": "slow", "delay": {"fixedDelay": "50ms", "percentage": {"value": 100}}},
            {"rule": "broken", "abort": {"httpStatus": 555, "percentage": {"value": 100}}}]},
        "breaker": {"afterRouter": true, "breakers": [
            {"cluster": "shop-v1", "consecutiveErrors": 5},
            {"cluster": "shop-v2", "consecutiveErrors": 5}]},
        "debug": debug
    })
}

fn debug_section(extra: Value) -> Value {
    let mut debug = json!({"header": DEBUG_HEADER, "secret": SECRET, "positions": [
        "shop.yaml:10:5", "shop.yaml:16:5", "shop.yaml:22:5", "shop.yaml:28:5"]});
    if let (Some(debug), Value::Object(extra)) = (debug.as_object_mut(), extra) {
        debug.extend(extra);
    }
    debug
}

fn start(v1: &Upstream, v2: &Upstream, config: &Value) -> Envoy {
    let yaml = Bootstrap::new()
        .cluster("shop-v1", v1.port())
        .cluster("shop-v2", v2.port())
        .wasm_filter("suite", &config.to_string())
        .route_cluster_header()
        .render();
    Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e:#}\n{yaml}"))
}

fn get(envoy: &Envoy, headers: &[(&str, &str)]) -> Response {
    let request = headers.iter().fold(
        Request::get(envoy.listener_port(LISTENER), "/").authority("shop"),
        |r, (name, value)| r.header(name, value),
    );
    client::send(&request).unwrap_or_else(|e| panic!("GET {headers:?}: {e:#}\n{}", envoy.log()))
}

/// Whether any request the upstream saw carried `name`.
fn upstream_saw(upstream: &Upstream, name: &str) -> bool {
    upstream
        .requests()
        .iter()
        .any(|r| r.headers.iter().any(|(n, _)| n == name))
}

#[test]
fn a_request_with_the_secret_gets_the_explanation_and_the_upstream_never_sees_it() {
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let envoy = start(&v1, &v2, &config(debug_section(json!({}))));

    // Header routing: the rule, its position, the cluster, no split, no fault, the breaker.
    let r = get(&envoy, &[("x-tester", "yes"), (DEBUG_HEADER, SECRET)]);
    assert_eq!((r.status, r.served_by()), (200, Some("shop-v2")));
    assert_eq!(
        r.header_str(EXPLAIN),
        Some(
            "rule=testers at shop.yaml:10:5; cluster=shop-v2; split=none; fault=none; \
             breaker=closed"
        ),
        "{r:?}"
    );

    // The split: the member chosen and its bucket, the same for the same sticky key, and the
    // same member as the request without the debug header.
    let plain = get(&envoy, &[("end-user", "jason")]);
    let r = get(&envoy, &[("end-user", "jason"), (DEBUG_HEADER, SECRET)]);
    let value = r.header_str(EXPLAIN).unwrap_or_else(|| panic!("{r:?}"));
    let member = if plain.served_by() == Some("shop-v1") {
        0
    } else {
        1
    };
    assert!(
        value.starts_with(&format!(
            "rule=rollout at shop.yaml:28:5; cluster={}; split=rollout member={member} bucket=",
            plain.served_by().unwrap()
        )),
        "{value}"
    );
    let bucket: u32 = value
        .split(" bucket=")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("{value}"));
    assert!(
        if member == 0 {
            bucket < 9000
        } else {
            bucket >= 9000
        },
        "member {member} owns bucket {bucket} of a 90/10 split: {value}"
    );
    assert!(
        value.ends_with("/10000; fault=none; breaker=closed"),
        "{value}"
    );
    let again = get(&envoy, &[("end-user", "jason"), (DEBUG_HEADER, SECRET)]);
    assert_eq!(
        again.header_str(EXPLAIN),
        Some(value),
        "sticky: same bucket"
    );

    // A delayed request: the fault, and the breaker admission the delay's end made.
    let r = get(&envoy, &[("x-fault", "delay"), (DEBUG_HEADER, SECRET)]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header_str(EXPLAIN),
        Some(
            "rule=slow at shop.yaml:16:5; cluster=shop-v1; split=none; fault=delay=50ms; \
             breaker=closed"
        ),
        "{r:?}"
    );

    // The debug header, right or wrong, never reached an upstream.
    assert!(v1.request_count() + v2.request_count() >= 5);
    assert!(!upstream_saw(&v1, DEBUG_HEADER) && !upstream_saw(&v2, DEBUG_HEADER));
}

#[test]
fn requests_without_the_header_get_nothing_and_wrong_or_spoofed_ones_nothing_either() {
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let envoy = start(&v1, &v2, &config(debug_section(json!({}))));
    let cases: [&[(&str, &str)]; 5] = [
        // Absent.
        &[("x-tester", "yes")],
        // Wrong secret, a prefix of it, empty.
        &[
            ("x-tester", "yes"),
            (DEBUG_HEADER, "correct-horse-battery-staple-43"),
        ],
        &[("x-tester", "yes"), (DEBUG_HEADER, "correct-horse")],
        &[("x-tester", "yes"), (DEBUG_HEADER, "")],
        // A client that sends the explanation header itself.
        &[
            ("x-tester", "yes"),
            (EXPLAIN, "rule=admin; cluster=shop-v2"),
        ],
    ];
    for headers in cases {
        let r = get(&envoy, headers);
        assert_eq!(
            (r.status, r.served_by()),
            (200, Some("shop-v2")),
            "{headers:?}"
        );
        assert_eq!(r.header(EXPLAIN), None, "{headers:?}: {r:?}");
    }
    assert_eq!(v2.request_count(), cases.len());
    assert!(
        !upstream_saw(&v2, DEBUG_HEADER),
        "a wrong secret is stripped too"
    );
}

#[test]
fn trusted_networks_decide_with_the_secret() {
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    // The harness's client connects from 127.0.0.1.
    let outside = config(debug_section(json!({"trustedCidrs": ["10.0.0.0/8"]})));
    let envoy = start(&v1, &v2, &outside);
    let r = get(&envoy, &[("x-tester", "yes"), (DEBUG_HEADER, SECRET)]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header(EXPLAIN),
        None,
        "right secret, untrusted client: {r:?}"
    );
    drop(envoy);

    let inside = config(json!({"header": DEBUG_HEADER, "trustedCidrs": ["127.0.0.0/8", "::1"]}));
    let envoy = start(&v1, &v2, &inside);
    let r = get(&envoy, &[("x-tester", "yes"), (DEBUG_HEADER, "1")]);
    assert_eq!(
        r.header_str(EXPLAIN),
        Some("rule=testers; cluster=shop-v2; split=none; fault=none; breaker=closed"),
        "trusted client, no secret configured, no positions: {r:?}"
    );
    assert!(!upstream_saw(&v2, DEBUG_HEADER));
}

#[test]
fn local_replies_are_explained_too() {
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let envoy = start(&v1, &v2, &config(debug_section(json!({}))));
    let r = get(&envoy, &[("x-fault", "abort"), (DEBUG_HEADER, SECRET)]);
    assert_eq!(r.status, 555);
    assert_eq!(
        r.header_str(EXPLAIN),
        Some(
            "rule=broken at shop.yaml:22:5; cluster=shop-v1; split=none; fault=abort=555; \
             breaker=skipped"
        ),
        "{r:?}"
    );
    let missing = Request::get(envoy.listener_port(LISTENER), "/")
        .authority("elsewhere")
        .header(DEBUG_HEADER, SECRET);
    let r = client::send(&missing).unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header_str(EXPLAIN),
        Some("rule=none; cluster=none; split=none; fault=none; breaker=none"),
        "{r:?}"
    );
    assert_eq!(v1.request_count(), 0);
}

#[test]
fn envoy_refuses_a_debug_section_without_secret_or_networks() {
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let yaml = Bootstrap::new()
        .cluster("shop-v1", v1.port())
        .cluster("shop-v2", v2.port())
        .wasm_filter(
            "suite",
            &config(json!({"header": DEBUG_HEADER})).to_string(),
        )
        .route_cluster_header()
        .render();
    let log = Envoy::start_expect_failure(&yaml);
    assert!(
        log.contains("sluice-suite: debug: needs a secret, trustedCidrs, or both"),
        "{log}"
    );
    assert!(!log.contains(SECRET));
}

#[test]
fn open_breakers_and_a_split_with_every_member_unavailable_are_explained() {
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    v1.set_behavior(Behavior::Status(500));
    v2.set_behavior(Behavior::Status(500));
    let mut config = config(debug_section(json!({})));
    config["breaker"] = json!({"afterRouter": true, "breakers": [
        {"cluster": "shop-v1", "consecutiveErrors": 1, "baseEjectionTime": "120s"},
        {"cluster": "shop-v2", "consecutiveErrors": 1, "baseEjectionTime": "120s"}]});
    let envoy = start(&v1, &v2, &config);
    // Each failure opens its member's breaker; the split fails over, then has none left.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let r = get(&envoy, &[]);
        statuses.push(r.status);
        if r.header_str("x-sluice-canary") == Some("all-members-unavailable") {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    let r = get(&envoy, &[(DEBUG_HEADER, SECRET)]);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.header_str(EXPLAIN),
        Some("rule=rollout at shop.yaml:28:5; cluster=none; split=none; fault=none; breaker=none"),
        "{r:?}"
    );
    // A rule to one cluster whose breaker is open: the breaker's 503, explained.
    let r = get(&envoy, &[("x-tester", "yes"), (DEBUG_HEADER, SECRET)]);
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.header("x-sluice-breaker").is_some(), "{r:?}");
    assert_eq!(
        r.header_str(EXPLAIN),
        Some(
            "rule=testers at shop.yaml:10:5; cluster=shop-v2; split=none; fault=none; \
             breaker=not-admitted"
        ),
        "{r:?}"
    );
}
