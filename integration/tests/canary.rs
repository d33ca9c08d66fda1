//! The canary filter through a real Envoy: weighted splits, sticky keys (and their monotone
//! buckets), pin cookies, progressive schedules, breaker failover, refused configs, and the
//! router -> canary chain.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_integration::binomial::assert_plausible;
use sluice_integration::bootstrap::{Bootstrap, LISTENER_NAME};
use sluice_integration::client::{self, NO_HEADERS, Request, Response};
use sluice_integration::envoy::Envoy;
use sluice_integration::upstream::{Behavior, Upstream};

/// Two upstreams, `v1` (stable) and `v2` (canary), behind clusters `reviews-v1`/`reviews-v2`.
struct Backends {
    v1: Upstream,
    v2: Upstream,
}

impl Backends {
    fn start() -> Self {
        Self {
            v1: Upstream::start("v1"),
            v2: Upstream::start("v2"),
        }
    }

    fn bootstrap(&self) -> Bootstrap {
        Bootstrap::new()
            .cluster("reviews-v1", self.v1.port())
            .cluster("reviews-v2", self.v2.port())
            .route_cluster_header()
    }
}

/// A canary config running alone: one rule sending everything to split `reviews`.
fn alone(split: Value) -> String {
    json!({"splits": [split], "rules": [{"split": "reviews"}]}).to_string()
}

fn split(weights: [u32; 2]) -> Value {
    json!({
        "name": "reviews",
        "members": [
            {"cluster": "reviews-v1", "weight": weights[0]},
            {"cluster": "reviews-v2", "weight": weights[1]},
        ],
    })
}

fn start(bootstrap: Bootstrap) -> (Envoy, u16) {
    let envoy = Envoy::start(&bootstrap.render()).unwrap();
    let port = envoy.listener_port(LISTENER_NAME);
    (envoy, port)
}

fn routed_stat(member: &str) -> String {
    format!("wasmcustom.sluice.canary.split.reviews.member.{member}.routed")
}

#[test]
fn weighted_split_follows_the_weights() {
    let backends = Backends::start();
    let v3 = Upstream::start("v3");
    let mut config = split([90, 10]);
    config["members"]
        .as_array_mut()
        .unwrap()
        .push(json!({"cluster": "reviews-v3", "weight": 0}));
    let (envoy, port) = start(
        backends
            .bootstrap()
            .cluster("reviews-v3", v3.port())
            .wasm_filter("canary", &alone(config))
            .without_access_log(),
    );

    let n = 4_000;
    let responses = client::get_many(port, "reviews", "/", NO_HEADERS, n).unwrap();
    let counts = client::served_by_counts(&responses);
    let v1 = counts.get("v1").copied().unwrap_or(0);
    let v2 = counts.get("v2").copied().unwrap_or(0);
    assert_eq!(
        v1 + v2,
        n as u64,
        "every request served by v1 or v2: {counts:?}"
    );
    assert_plausible("requests to the 10% canary", v2, n as u64, 0.1);
    assert_eq!(
        v3.request_count(),
        0,
        "a weight-0 member never gets traffic"
    );

    // The per-member counters agree with what the upstreams saw.
    for (member, expected) in [("reviews-v1", v1), ("reviews-v2", v2)] {
        let stat = routed_stat(member);
        let seen = envoy
            .wait_for_stat(&stat, |v| v >= expected, Duration::from_secs(10))
            .unwrap();
        assert_eq!(seen, expected, "{stat}");
    }
    assert_eq!(envoy.stat(&routed_stat("reviews-v3")), Some(0));
    // The member label reaches Prometheus through the bootstrap's stats_tags.
    let prometheus = envoy.prometheus().unwrap();
    assert!(
        prometheus.contains(r#"member="reviews-v2""#),
        "no member label in:\n{prometheus}"
    );
}

#[test]
fn clients_cannot_pick_the_member_when_the_filter_runs_alone() {
    let backends = Backends::start();
    let (_envoy, port) = start(
        backends
            .bootstrap()
            .wasm_filter("canary", &alone(split([100, 0])))
            .forward_internal_headers(),
    );
    let forged = [
        ("x-sluice-cluster", "reviews-v2"),
        ("x-sluice-split", "other"),
        ("x-sluice-rule", "evil"),
    ];
    let responses = client::get_many(port, "reviews", "/", &forged, 50).unwrap();
    assert_eq!(
        client::served_by_counts(&responses),
        BTreeMap::from([("v1".to_owned(), 50)])
    );
    // What reached the upstream: the filter's decision, not the client's copies.
    for request in backends.v1.requests() {
        assert_eq!(request.header("x-sluice-cluster"), Some(&b"reviews-v1"[..]));
        assert!(!request.has_header("x-sluice-split"));
        assert!(!request.has_header("x-sluice-rule"));
    }
}

/// Sends each key `repeat` times (interleaved, so consecutive requests of a key land on
/// different connections and workers) and returns the member that served each key, failing if
/// any key was served by two members.
fn member_per_key(port: u16, keys: &[String], repeat: usize) -> BTreeMap<String, String> {
    let requests: Vec<Request> = (0..repeat)
        .flat_map(|_| keys.iter())
        .map(|key| {
            Request::get(port, "/")
                .authority("reviews")
                .header("end-user", key)
        })
        .collect();
    let mut member: BTreeMap<String, String> = BTreeMap::new();
    for (request, response) in requests.iter().zip(client::send_many(requests.clone(), 16)) {
        let response = response.unwrap();
        let key = String::from_utf8(request.headers[0].1.to_vec()).unwrap();
        let served = response.served_by().unwrap_or("<none>").to_owned();
        let first = member.entry(key.clone()).or_insert_with(|| served.clone());
        assert_eq!(
            *first, served,
            "key {key} served by {first} and then by {served}"
        );
    }
    member
}

#[test]
fn sticky_keys_stay_pinned_and_raising_the_canary_only_moves_keys_to_it() {
    let backends = Backends::start();
    let keys: Vec<String> = (0..1_000).map(|i| format!("user-{i}")).collect();
    let sticky = |weights| {
        let mut s = split(weights);
        s["sticky"] = json!({"header": "end-user"});
        alone(s)
    };

    let before = {
        let (_envoy, port) = start(
            backends
                .bootstrap()
                .wasm_filter("canary", &sticky([90, 10]))
                .without_access_log(),
        );
        member_per_key(port, &keys, 3)
    };
    let on_canary = before.values().filter(|m| *m == "v2").count() as u64;
    assert_plausible("keys on the 10% canary", on_canary, 1_000, 0.1);

    // A second Envoy (fresh process, no shared state) with the canary raised to 50%: the
    // buckets come from the key's hash alone.
    let after = {
        let (_envoy, port) = start(
            backends
                .bootstrap()
                .wasm_filter("canary", &sticky([50, 50]))
                .without_access_log(),
        );
        member_per_key(port, &keys, 2)
    };
    let mut moved_to_canary = 0;
    for key in &keys {
        match (before[key].as_str(), after[key].as_str()) {
            ("v2", "v1") => panic!("key {key} moved from the canary back to stable"),
            ("v1", "v2") => moved_to_canary += 1,
            (b, a) => assert_eq!(b, a, "key {key}"),
        }
    }
    // 40% of all keys move (those between the 50% and 90% boundaries).
    assert_plausible("keys moved to the canary", moved_to_canary, 1_000, 0.4);
}

#[test]
fn pin_cookie_keeps_a_browser_without_a_key_on_one_member() {
    let backends = Backends::start();
    let mut config = split([50, 50]);
    config["sticky"] =
        json!({"header": "end-user", "setCookie": {"name": "sluice-pin", "ttl": "1h"}});
    let (_envoy, port) = start(backends.bootstrap().wasm_filter("canary", &alone(config)));

    let mut first_members = BTreeMap::new();
    for browser in 0..30 {
        let first = client::get(port, "reviews", "/", NO_HEADERS).unwrap();
        let set_cookie = first.header_str("set-cookie").unwrap().to_owned();
        assert!(
            set_cookie.starts_with("sluice-pin=") && set_cookie.contains("Max-Age=3600"),
            "{set_cookie}"
        );
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let member = first.served_by().unwrap().to_owned();
        let again =
            client::get_many(port, "reviews", "/", &[("cookie", cookie.as_str())], 10).unwrap();
        for response in &again {
            assert_eq!(
                response.served_by(),
                Some(member.as_str()),
                "browser {browser} ({cookie})"
            );
            assert!(
                response.header("set-cookie").is_none(),
                "a pinned browser gets no new cookie"
            );
        }
        *first_members.entry(member).or_insert(0) += 1;
    }
    // Fresh browsers spread over both members (all 30 on one: probability 2^-29).
    assert_eq!(first_members.len(), 2, "{first_members:?}");
}

/// Envoy hands a filter only the first line of a repeated header; an HTTP/1.1 client may send
/// its cookies on several `cookie` lines, and a key may be any bytes. Both stay pinned.
#[test]
fn a_pin_cookie_on_a_later_cookie_line_and_a_non_utf8_key_stay_pinned() {
    let backends = Backends::start();
    let mut config = split([50, 50]);
    config["sticky"] =
        json!({"header": "end-user", "setCookie": {"name": "sluice-pin", "ttl": "1h"}});
    let (_envoy, port) = start(backends.bootstrap().wasm_filter("canary", &alone(config)));

    for browser in 0..10 {
        let first = client::get(port, "reviews", "/", NO_HEADERS).unwrap();
        let set_cookie = first.header_str("set-cookie").unwrap();
        let pin = set_cookie.split(';').next().unwrap().to_owned();
        let member = first.served_by().unwrap().to_owned();
        // Two `cookie` lines, the pin on the second; without looking past the first line
        // each request would be a fresh 50/50 pick with a new cookie.
        let lines = [("cookie", "theme=dark; lang=en"), ("cookie", pin.as_str())];
        for response in client::get_many(port, "reviews", "/", &lines, 8).unwrap() {
            assert_eq!(
                response.served_by(),
                Some(member.as_str()),
                "browser {browser}"
            );
            assert!(response.header("set-cookie").is_none(), "browser {browser}");
        }
    }

    let mut members = BTreeMap::new();
    for user in 0..30u8 {
        let key = [b'u', 0xff, 0xfe, b'0' + user, 0x80];
        let responses =
            client::get_many(port, "reviews", "/", &[("end-user", &key[..])], 5).unwrap();
        let counts = client::served_by_counts(&responses);
        assert_eq!(counts.len(), 1, "key {key:?}: {counts:?}");
        assert!(responses.iter().all(|r| r.header("set-cookie").is_none()));
        *members
            .entry(responses[0].served_by().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    // Keys hash over both members (all 30 on one: probability 2^-29).
    assert_eq!(members.len(), 2, "{members:?}");
}

#[test]
fn source_address_key_ignores_the_client_port() {
    let backends = Backends::start();
    let mut config = split([50, 50]);
    config["sticky"] = json!({"sourceAddress": true});
    let (_envoy, port) = start(backends.bootstrap().wasm_filter("canary", &alone(config)));
    // Every request opens a new connection from a new port of 127.0.0.1: with the port in the
    // key they would spread 50/50; without it they all share one member.
    let responses = client::get_many(port, "reviews", "/", NO_HEADERS, 100).unwrap();
    let counts = client::served_by_counts(&responses);
    assert_eq!(counts.len(), 1, "{counts:?}");
}

#[test]
fn schedule_advances_by_itself_on_every_worker_and_reports_its_step() {
    let backends = Backends::start();
    let mut config = split([100, 0]);
    config["schedule"] = json!({"steps": [
        {"weights": [100, 0], "hold": "8s"},
        {"weights": [0, 100], "hold": "0s"},
    ]});
    let started = Instant::now();
    let (envoy, port) = start(backends.bootstrap().wasm_filter("canary", &alone(config)));
    let gauge = "wasmcustom.sluice.canary.split.reviews.step";
    assert_eq!(envoy.stat(gauge), Some(0));

    // One request at a time until the canary serves; every request opens its own connection,
    // so both workers answer along the way.
    let mut served = Vec::new();
    let switched_at = loop {
        let response = client::get(port, "reviews", "/", NO_HEADERS).unwrap();
        served.push(response.served_by().unwrap().to_owned());
        if served.last().map(String::as_str) == Some("v2") {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "never switched: {served:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(served[0], "v1", "step 0 applied first");
    // The start was written while Envoy started, after `started`: the switch cannot be earlier.
    assert!(
        switched_at >= Duration::from_secs(8),
        "switched after {switched_at:?}"
    );
    // Workers share the start, so once one switched every later request goes to the canary.
    let after = client::get_many(port, "reviews", "/", NO_HEADERS, 100).unwrap();
    assert_eq!(
        client::served_by_counts(&after),
        BTreeMap::from([("v2".to_owned(), 100)])
    );
    envoy
        .wait_for_stat(gauge, |step| step == 1, Duration::from_secs(10))
        .unwrap();
}

#[test]
fn paused_schedule_holds_its_step() {
    let backends = Backends::start();
    let mut config = split([100, 0]);
    config["schedule"] = json!({"paused": true, "steps": [
        {"weights": [100, 0], "hold": "100ms"},
        {"weights": [0, 100], "hold": "0s"},
    ]});
    let (envoy, port) = start(backends.bootstrap().wasm_filter("canary", &alone(config)));
    std::thread::sleep(Duration::from_millis(500));
    let responses = client::get_many(port, "reviews", "/", NO_HEADERS, 50).unwrap();
    assert_eq!(
        client::served_by_counts(&responses),
        BTreeMap::from([("v1".to_owned(), 50)])
    );
    assert_eq!(
        envoy.stat("wasmcustom.sluice.canary.split.reviews.step"),
        Some(0)
    );
}

#[test]
fn bad_configs_are_refused_with_the_reason_in_envoys_log() {
    let backends = Backends::start();
    let cases = [
        (
            json!({"splits": [split([90, 10])], "rules": [{"split": "ratings"}]}),
            r#"rules[0].split: unknown split \"ratings\""#,
        ),
        (
            json!({"splits": [{"name": "reviews", "members": [
                {"cluster": "reviews-v1", "weight": 0}, {"cluster": "reviews-v2", "weight": 0}]}]}),
            "all weights are 0",
        ),
        (
            json!({"splits": [{"name": "reviews", "members": [{"cluster": "a"}, {"cluster": "b"}],
                "schedule": {"steps": [{"weights": [1, 2, 3], "hold": "1m"}]}}]}),
            "schedule.steps[0].weights has 3 entries but the split has 2 members",
        ),
    ];
    for (config, reason) in cases {
        let log = Envoy::start_expect_failure(
            &backends
                .bootstrap()
                .wasm_filter("canary", &config.to_string())
                .render(),
        );
        let reason = reason.replace(r#"\""#, "\"");
        assert!(
            log.lines()
                .any(|l| l.contains("sluice-canary") && l.contains(&reason)),
            "expected {reason:?} in Envoy's log:\n{log}"
        );
    }
}

fn served(responses: &[Response]) -> BTreeMap<String, u64> {
    client::served_by_counts(responses)
}

#[test]
fn after_router_resolves_the_split_header_and_refuses_unknown_splits() {
    // afterRouter trusts x-sluice-split (here sent by the test in the router's place).
    let backends = Backends::start();
    let config = json!({"afterRouter": true, "splits": [split([50, 50])]}).to_string();
    let (_envoy, port) = start(backends.bootstrap().wasm_filter("canary", &config));
    let response = client::get(port, "reviews", "/", &[("x-sluice-split", "nope")]).unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(
        response.header_str("x-sluice-canary"),
        Some("unknown-split")
    );
    let ok = client::get_many(port, "reviews", "/", &[("x-sluice-split", "reviews")], 20).unwrap();
    assert_eq!(served(&ok).values().sum::<u64>(), 20, "{:?}", served(&ok));
}

/// canary -> breaker, with breakers on both members that open after 3 consecutive 5xx and
/// stay open for an hour (so no half-open probe happens during the test).
fn canary_then_breaker(backends: &Backends, canary_config: &str) -> Bootstrap {
    let breaker = |cluster: &str| {
        json!({"cluster": cluster, "consecutiveErrors": 3, "interval": "1h",
               "baseEjectionTime": "1h", "maxEjectionTime": "1h"})
    };
    let breaker_config = json!({"afterRouter": true,
        "breakers": [breaker("reviews-v1"), breaker("reviews-v2")]});
    backends
        .bootstrap()
        .wasm_filter("canary", canary_config)
        .wasm_filter("breaker", &breaker_config.to_string())
}

/// Sends requests one at a time until `cluster`'s breaker has opened (the breaker's own
/// rejections or the canary's avoidance make the failing upstream stop receiving requests).
fn trip(port: u16, upstream: &Upstream, requests: usize) {
    for _ in 0..requests {
        client::get(port, "reviews", "/", NO_HEADERS).unwrap();
    }
    assert!(
        upstream.request_count() >= 3,
        "{} saw only {} requests: its breaker cannot have tripped",
        upstream.name(),
        upstream.request_count()
    );
}

#[test]
fn open_breaker_moves_the_canary_share_to_stable_then_all_open_fails_fast() {
    let backends = Backends::start();
    backends.v2.set_behavior(Behavior::Status(500));
    let (envoy, port) = start(canary_then_breaker(&backends, &alone(split([50, 50]))));

    // 60 sequential requests: about 30 reach v2, which fails them and trips its breaker after
    // 3 (fewer than 3 of 60 at 50%: probability < 1e-14).
    trip(port, &backends.v2, 60);
    let before = backends.v2.request_count();

    // From now on the canary's share goes to stable: every request succeeds on v1, none is
    // sent to v2 nor rejected by v2's breaker.
    let responses = client::get_many(port, "reviews", "/", NO_HEADERS, 200).unwrap();
    assert_eq!(served(&responses), BTreeMap::from([("v1".to_owned(), 200)]));
    assert!(responses.iter().all(|r| r.status == 200));
    assert_eq!(backends.v2.request_count(), before);

    // Stable fails too: once its breaker opens, no member is left and the canary answers 503
    // at once with the reason, without reaching any upstream.
    backends.v1.set_behavior(Behavior::Status(500));
    trip(port, &backends.v1, 10);
    let (v1_before, v2_before) = (backends.v1.request_count(), backends.v2.request_count());
    let responses = client::get_many(port, "reviews", "/", NO_HEADERS, 20).unwrap();
    for response in &responses {
        assert_eq!(response.status, 503);
        assert_eq!(
            response.header_str("x-sluice-canary"),
            Some("all-members-unavailable")
        );
    }
    assert_eq!(backends.v1.request_count(), v1_before);
    assert_eq!(backends.v2.request_count(), v2_before);
    let unavailable = envoy
        .wait_for_stat(
            "wasmcustom.sluice.canary.split.reviews.unavailable",
            |v| v >= 20,
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(unavailable >= 20);
}

#[test]
fn without_failover_the_open_breaker_rejects_the_canary_share() {
    let backends = Backends::start();
    backends.v2.set_behavior(Behavior::Status(500));
    let mut config = split([50, 50]);
    config["failover"] = json!(false);
    let (_envoy, port) = start(canary_then_breaker(&backends, &alone(config)));
    trip(port, &backends.v2, 60);
    let n = 400;
    let responses = client::get_many(port, "reviews", "/", NO_HEADERS, n).unwrap();
    let rejected = responses
        .iter()
        .filter(|r| r.status == 503 && r.header("x-sluice-breaker").is_some())
        .count() as u64;
    // The canary still sends half the traffic at the open breaker, which rejects it.
    assert_plausible(
        "requests rejected by the open breaker",
        rejected,
        n as u64,
        0.5,
    );
}

#[test]
fn router_then_canary_resolves_the_routers_split() {
    let backends = Backends::start();
    let router = json!({"virtualHosts": [{"name": "reviews", "domains": ["*"], "rules": [
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": {"cluster": "reviews-v2"}},
        {"name": "default", "route": {"split": "reviews"}},
    ]}]});
    let mut canary = split([80, 20]);
    canary["sticky"] = json!({"header": "end-user"});
    let canary = json!({"afterRouter": true, "splits": [canary]});
    let (envoy, port) = start(
        backends
            .bootstrap()
            .wasm_filter("router", &router.to_string())
            .wasm_filter("canary", &canary.to_string())
            .forward_internal_headers()
            .without_access_log(),
    );

    // The router's own destination passes through the canary untouched.
    let jason = client::get_many(port, "reviews", "/", &[("end-user", "jason")], 20).unwrap();
    assert_eq!(served(&jason), BTreeMap::from([("v2".to_owned(), 20)]));

    // The split: 80/20 over distinct keys, each key pinned; a client's forged split header is
    // stripped by the router, so it cannot reach the canary.
    let n = 2_000;
    let requests: Vec<Request> = (0..n)
        .map(|i| {
            Request::get(port, "/")
                .authority("reviews")
                .header("end-user", format!("user-{i}"))
                .header("x-sluice-split", "nope")
        })
        .collect();
    let responses: Vec<Response> = client::send_many(requests, 16)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let counts = served(&responses);
    assert_eq!(counts.values().sum::<u64>(), n, "{counts:?}");
    assert_plausible("keys on the 20% canary", counts["v2"], n, 0.2);

    // Upstreams see the resolved cluster and no split header.
    for request in backends.v1.requests().iter().chain(&backends.v2.requests()) {
        assert!(!request.has_header("x-sluice-split"));
        let cluster = request.header("x-sluice-cluster").unwrap();
        assert!(cluster == b"reviews-v1" || cluster == b"reviews-v2");
    }
    let routed = envoy
        .wait_for_stat(
            &routed_stat("reviews-v2"),
            |v| v >= counts["v2"],
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(
        routed, counts["v2"],
        "jason's requests are the router's, not the canary's"
    );
}
