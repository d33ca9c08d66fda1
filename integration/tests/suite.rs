//! The suite module (router + canary + fault + breaker in ONE proxy-wasm filter) through a real
//! Envoy 1.40 with two workers: the chain's behaviours (`chain.rs`) on one filter. The plugin
//! config is the chain's four configs nested (`sluice_core::suite::SuiteConfig`).
//!
//! Needs the module: `cargo xtask build-wasm` (builds `sluice_suite.wasm` with the others).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_integration::binomial::assert_plausible;
use sluice_integration::bootstrap::Bootstrap;
use sluice_integration::client::{self, Request, Response};
use sluice_integration::envoy::Envoy;
use sluice_integration::upstream::{Behavior, Upstream};

const LISTENER: &str = "listener_test";
const REJECT_HEADER: &str = sluice_core::wire::BREAKER_REJECT_HEADER;

/// The chain test's mesh as a suite config: header routing to v2, a rule aborting 555, a
/// rule aborting half its requests with 556, a delayed rule, and a sticky 90/10 split, with
/// breakers on both subsets (three consecutive errors).
fn config(delay_ms: u64) -> Value {
    json!({
        "router": {"virtualHosts": [{"name": "shop", "domains": ["shop"], "rules": [
            {"name": "testers", "match": [{"headers": {"x-tester": {"exact": "yes"}}}],
             "route": {"cluster": "shop-v2"}},
            {"name": "broken", "match": [{"headers": {"x-fault": {"exact": "abort"}}}],
             "route": {"cluster": "shop-v1"}},
            {"name": "flaky", "match": [{"headers": {"x-fault": {"exact": "half"}}}],
             "route": {"cluster": "shop-v1"}},
            {"name": "slow", "match": [{"headers": {"x-fault": {"exact": "delay"}}}],
             "route": {"cluster": "shop-v1"}},
            {"name": "rollout", "route": {"split": "rollout"}}]}]},
        "canary": {"afterRouter": true, "splits": [{"name": "rollout",
            "members": [{"cluster": "shop-v1", "weight": 90}, {"cluster": "shop-v2", "weight": 10}],
            "sticky": {"header": "end-user"}}]},
        "fault": {"afterRouter": true, "faults": [
            {"rule": "broken", "abort": {"httpStatus": 555, "percentage": {"value": 100}}},
            {"rule": "flaky", "abort": {"httpStatus": 556, "percentage": {"value": 50}}},
            {"rule": "slow", "delay": {"fixedDelay": format!("{delay_ms}ms"),
                                       "percentage": {"value": 100}}}]},
        // detailedReplies: the suite names the cluster in its rejections, as the breaker does.
        "breaker": {"afterRouter": true, "detailedReplies": true, "breakers": [
            {"cluster": "shop-v1", "consecutiveErrors": 3, "baseEjectionTime": "120s"},
            {"cluster": "shop-v2", "consecutiveErrors": 3, "baseEjectionTime": "120s"}]}
    })
}

fn bootstrap(v1: &Upstream, v2: &Upstream, config: &Value) -> String {
    Bootstrap::new()
        .cluster("shop-v1", v1.port())
        .cluster("shop-v2", v2.port())
        .wasm_filter("suite", &config.to_string())
        .route_cluster_header()
        .render()
}

/// Envoy with two workers (the harness default) running the suite as its only sluice filter.
fn start(v1: &Upstream, v2: &Upstream, config: &Value) -> Envoy {
    let yaml = bootstrap(v1, v2, config);
    assert_eq!(yaml.matches("sluice_suite.wasm").count(), 1, "{yaml}");
    Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e:#}\n{yaml}"))
}

fn request(envoy: &Envoy, headers: &[(&str, &str)]) -> Request {
    headers.iter().fold(
        Request::get(envoy.listener_port(LISTENER), "/").authority("shop"),
        |r, (name, value)| r.header(name, value),
    )
}

fn get(envoy: &Envoy, headers: &[(&str, &str)]) -> Response {
    client::send(&request(envoy, headers))
        .unwrap_or_else(|e| panic!("GET {headers:?}: {e:#}\n{}", envoy.log()))
}

/// Waits until the per-request counter `name` (rule matched, member routed, breaker requests)
/// equals `expected`, and fails if it does not within 10 s. The suite batches those counters
/// per worker and publishes them on the worker's tick, at most 1 s late
/// (`filters/suite/README.md`), so they are waited for, never read at once; the others
/// ([`stat`]) are published immediately.
fn settled(envoy: &Envoy, name: &str, expected: u64) {
    envoy
        .wait_for_stat(
            &format!("wasmcustom.{name}"),
            |v| v == expected,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", envoy.stats_text().unwrap_or_default()));
}

fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .stat(&format!("wasmcustom.{name}"))
        .unwrap_or_else(|| {
            panic!(
                "no stat {name}:\n{}",
                envoy.stats_text().unwrap_or_default()
            )
        })
}

#[test]
fn header_routing_a_sticky_90_10_split_and_counters_equal_to_the_upstreams() {
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let envoy = start(&v1, &v2, &config(1000));
    for _ in 0..5 {
        let r = get(
            &envoy,
            &[
                ("x-tester", "yes"),
                ("x-sluice-cluster", "shop-v1"),
                ("x-sluice-split", "rollout"),
                ("x-sluice-rule", "rollout"),
            ],
        );
        assert_eq!(
            (r.status, r.served_by()),
            (200, Some("shop-v2")),
            "a client-sent x-sluice-cluster is replaced"
        );
    }
    // 1,000 users, three requests each: every user stays on one member, about 10% on v2.
    let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let requests: Vec<Request> = (0..3)
        .flat_map(|_| users.iter().map(|u| request(&envoy, &[("end-user", u)])))
        .collect();
    let responses: Vec<Response> = client::send_many(requests, 16)
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e:#}\n{}", envoy.log())))
        .collect();
    let mut member_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, r) in responses.iter().enumerate() {
        let user = users[i % users.len()].as_str();
        let served = r
            .served_by()
            .unwrap_or_else(|| panic!("status {}", r.status));
        let first = *member_of.entry(user).or_insert(served);
        assert_eq!(first, served, "{user} moved between members");
    }
    let on_v2 = member_of.values().filter(|m| **m == "shop-v2").count();
    assert_plausible("users on v2", on_v2 as u64, 1000, 0.1);

    // The four filters' counters, by their names, equal what the upstreams saw.
    let (seen_v1, seen_v2) = (v1.request_count() as u64, v2.request_count() as u64);
    settled(&envoy, "sluice.router.rule.testers.matched", 5);
    settled(&envoy, "sluice.router.rule.rollout.matched", 3000);
    // v2 served the 5 testers and its split share; v1 only its split share.
    settled(
        &envoy,
        "sluice.canary.split.rollout.member.shop-v2.routed",
        seen_v2 - 5,
    );
    settled(
        &envoy,
        "sluice.canary.split.rollout.member.shop-v1.routed",
        seen_v1,
    );
    assert_eq!(
        stat(&envoy, "sluice.canary.split.rollout.member.shop-v1.routed")
            + stat(&envoy, "sluice.canary.split.rollout.member.shop-v2.routed"),
        3000
    );
    settled(&envoy, "sluice.breaker.cluster.shop-v1.requests", seen_v1);
    settled(&envoy, "sluice.breaker.cluster.shop-v2.requests", seen_v2);
    // No internal header reaches an upstream, not even the client-sent `x-sluice-split` the
    // suite leaves in place (the route strips them all, as generated configs do).
    for upstream in [&v1, &v2] {
        assert!(upstream.requests().iter().all(|r| {
            !r.has_header("x-sluice-split")
                && !r.has_header("x-sluice-cluster")
                && !r.has_header("x-sluice-rule")
        }));
    }
}

#[test]
fn faults_abort_their_rules_only_and_skip_breaker_admission() {
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let envoy = start(&v1, &v2, &config(1000));
    for _ in 0..20 {
        let r = get(&envoy, &[("x-fault", "abort")]);
        assert_eq!((r.status, r.served_by()), (555, None));
    }
    assert_eq!(
        v1.request_count(),
        0,
        "aborted requests never reach the upstream"
    );
    // Once the rule's 20 matches are published, so is every admission those requests made
    // (one batch per worker, flushed whole): none.
    settled(&envoy, "sluice.router.rule.broken.matched", 20);
    assert_eq!(
        stat(&envoy, "sluice.breaker.cluster.shop-v1.requests"),
        0,
        "an aborted request is not admitted by the breaker"
    );
    assert_eq!(stat(&envoy, "sluice.fault.rule.broken.aborts_injected"), 20);

    // 50 % aborts: a binomial count; the others reach v1 and pass the breaker.
    let n = 400;
    let requests = vec![request(&envoy, &[("x-fault", "half")]); n];
    let responses: Vec<Response> = client::send_many(requests, 16)
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    let counts = client::status_counts(&responses);
    let aborted = counts.get(&556).copied().unwrap_or(0);
    assert_eq!(
        aborted + counts.get(&200).copied().unwrap_or(0),
        n as u64,
        "{counts:?}"
    );
    assert_plausible("aborted with 556", aborted, n as u64, 0.5);
    assert_eq!(v1.request_count() as u64, n as u64 - aborted);
    assert_eq!(
        stat(&envoy, "sluice.fault.rule.flaky.aborts_injected"),
        aborted
    );
    settled(
        &envoy,
        "sluice.breaker.cluster.shop-v1.requests",
        n as u64 - aborted,
    );
}

#[test]
fn a_delay_holds_the_request_then_the_breaker_admits_it() {
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let envoy = start(&v1, &v2, &config(1500));
    let start = Instant::now();
    let r = get(&envoy, &[("x-fault", "delay")]);
    let elapsed = start.elapsed();
    assert_eq!((r.status, r.served_by()), (200, Some("shop-v1")));
    assert!(
        elapsed >= Duration::from_millis(1500),
        "delayed only {elapsed:?}"
    );
    settled(&envoy, "sluice.breaker.cluster.shop-v1.requests", 1);
    // The rule without a fault is not delayed by the others' faults (no timing bound: the
    // response simply comes from v2, and the delay counter did not move).
    let r = get(&envoy, &[("x-tester", "yes")]);
    assert_eq!((r.status, r.served_by()), (200, Some("shop-v2")));
    assert_eq!(stat(&envoy, "sluice.fault.rule.slow.delays_injected"), 1);

    // Clients that leave during the delay: no admission, no fault slot, nothing left queued.
    let gone: Vec<Request> = (0..10)
        .map(|_| request(&envoy, &[("x-fault", "delay")]).timeout(Duration::from_millis(200)))
        .collect();
    for r in client::send_many(gone, 10) {
        assert!(
            r.is_err(),
            "the client gave up before the delay ended: {r:?}"
        );
    }
    envoy
        .wait_for_stat(
            "wasmcustom.sluice.fault.active_faults",
            |v| v == 0,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Wait past the delay: a leaked queue entry would now admit (or resume) a dead stream.
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(v1.request_count(), 1, "no abandoned request reached v1");
    // The 11 delayed matches published: so is any admission made before the last flush.
    settled(&envoy, "sluice.router.rule.slow.matched", 11);
    settled(&envoy, "sluice.breaker.cluster.shop-v1.requests", 1);
    assert_eq!(stat(&envoy, "sluice.breaker.cluster.shop-v1.in_flight"), 0);
    let r = get(&envoy, &[("x-fault", "delay")]);
    assert_eq!((r.status, r.served_by()), (200, Some("shop-v1")));
}

#[test]
fn breakers_open_across_workers_the_canary_fails_over_then_answers_all_unavailable() {
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let envoy = start(&v1, &v2, &config(1000));
    v2.set_behavior(Behavior::Status(500));
    // Each request opens its own connection, so they spread over both workers: the count is
    // shared (vm_id "sluice").
    for _ in 0..3 {
        let r = get(&envoy, &[("x-tester", "yes")]);
        assert_eq!((r.status, r.served_by()), (500, Some("shop-v2")));
    }
    for _ in 0..5 {
        let r = get(&envoy, &[("x-tester", "yes")]);
        assert_eq!(r.status, 503, "{}", envoy.log());
        assert_eq!(r.header_str(REJECT_HEADER), Some("shop-v2 open"));
    }
    assert_eq!(
        v2.request_count(),
        3,
        "an open breaker sends nothing upstream"
    );
    assert_eq!(stat(&envoy, "sluice.breaker.cluster.shop-v2.trips"), 1);
    assert_eq!(
        stat(&envoy, "sluice.breaker.cluster.shop-v2.rejected_open"),
        5
    );
    // The split's v2 share goes to v1: every user, including those sticky on v2, gets v1.
    let requests: Vec<Request> = (0..300)
        .map(|i| request(&envoy, &[("end-user", &format!("user-{i}"))]))
        .collect();
    for r in client::send_many(requests, 16) {
        let r = r.unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!((r.status, r.served_by()), (200, Some("shop-v1")));
    }
    assert_eq!(v2.request_count(), 3);

    // Now v1 fails too: its breaker opens, and the split has no member left.
    v1.set_behavior(Behavior::Status(500));
    for _ in 0..3 {
        let r = get(&envoy, &[("end-user", "someone")]);
        assert_eq!((r.status, r.served_by()), (500, Some("shop-v1")));
    }
    let before = v1.request_count();
    for _ in 0..5 {
        let r = get(&envoy, &[("end-user", "someone")]);
        assert_eq!(r.status, 503);
        assert_eq!(
            r.header_str("x-sluice-canary"),
            Some("all-members-unavailable")
        );
    }
    assert_eq!(v1.request_count(), before);
    assert_eq!(stat(&envoy, "sluice.canary.split.rollout.unavailable"), 5);
}

#[test]
fn an_ejected_member_gets_its_share_back_when_the_ejection_ends() {
    // The failover and the admission read the clock only for a breaker stored open: this is
    // the path where the time decides. A 1 s ejection of v2; its sticky users go to v1 while
    // it lasts, and once it is over the first of them is v2's half-open probe, whose success
    // closes the breaker (no clock is needed again after that).
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let mut config = config(1000);
    config["breaker"]["breakers"][1]["baseEjectionTime"] = json!("1s");
    let envoy = start(&v1, &v2, &config);
    let on_v2 = (0..1000)
        .map(|i| format!("user-{i}"))
        .find(|user| {
            let point = sluice_core::canary::sticky_point("rollout", user.as_bytes());
            sluice_core::canary::locate(&[90, 10], point) == Some(1)
        })
        .expect("a 10 % member owns some of 1000 keys");
    let r = get(&envoy, &[("end-user", &on_v2)]);
    assert_eq!((r.status, r.served_by()), (200, Some("shop-v2")));

    v2.set_behavior(Behavior::Status(500));
    for _ in 0..3 {
        let r = get(&envoy, &[("x-tester", "yes")]);
        assert_eq!((r.status, r.served_by()), (500, Some("shop-v2")));
    }
    let tripped = Instant::now();
    assert_eq!(stat(&envoy, "sluice.breaker.cluster.shop-v2.trips"), 1);
    assert_eq!(stat(&envoy, "sluice.breaker.cluster.shop-v2.state"), 1);
    v2.set_behavior(Behavior::Ok);
    // While ejected (the check runs well inside the 1 s only if the machine keeps up; a slow
    // one may already be past it, so it is asserted only then), v2's sticky user goes to v1.
    let r = get(&envoy, &[("end-user", &on_v2)]);
    if tripped.elapsed() < Duration::from_millis(800) {
        assert_eq!(
            (r.status, r.served_by()),
            (200, Some("shop-v1")),
            "failover"
        );
    }
    let served_by_v2 = v2.request_count();

    // Past the ejection: the stored phase is still open (nothing wrote since the trip), so
    // the failover must read the clock to see that it is over.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(tripped.elapsed()));
    let r = get(&envoy, &[("end-user", &on_v2)]);
    assert_eq!(
        (r.status, r.served_by()),
        (200, Some("shop-v2")),
        "the probe goes to v2\n{}",
        envoy.log()
    );
    assert_eq!(v2.request_count(), served_by_v2 + 1);
    assert_eq!(
        stat(&envoy, "sluice.breaker.cluster.shop-v2.state"),
        0,
        "closed"
    );
    // Closed again: v2's users and the testers' rule reach it, on either worker.
    for _ in 0..4 {
        let r = get(&envoy, &[("end-user", &on_v2)]);
        assert_eq!((r.status, r.served_by()), (200, Some("shop-v2")));
        let r = get(&envoy, &[("x-tester", "yes")]);
        assert_eq!((r.status, r.served_by()), (200, Some("shop-v2")));
    }
    assert_eq!(stat(&envoy, "sluice.breaker.cluster.shop-v2.trips"), 1);
}

#[test]
fn an_outcome_the_client_ended_neither_counts_nor_resets_the_error_streak() {
    // A request whose client leaves is ignored (response flag `DC`): holding no slot and no
    // probe, it changes no breaker state, so `on_log` reads neither `response.code` nor the
    // state for it. Two errors, a client that gives up, a third error: exactly the third
    // trips. Counted as a success, the leaver would reset the streak (no trip); counted as an
    // error, the third request would be refused open instead of reaching v2.
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let envoy = start(&v1, &v2, &config(1000));
    v2.set_behavior(Behavior::Status(500));
    for _ in 0..2 {
        let r = get(&envoy, &[("x-tester", "yes")]);
        assert_eq!((r.status, r.served_by()), (500, Some("shop-v2")));
    }
    v2.set_behavior(Behavior::Delay(Duration::from_secs(3)));
    let gone =
        client::send(&request(&envoy, &[("x-tester", "yes")]).timeout(Duration::from_millis(300)));
    assert!(gone.is_err(), "the client gave up first: {gone:?}");
    // The stream is torn down (and its outcome logged) with its connection.
    envoy
        .wait_for_stat(
            "http.ingress.downstream_cx_destroy_remote_active_rq",
            |v| v == 1,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(stat(&envoy, "sluice.breaker.cluster.shop-v2.trips"), 0);

    v2.set_behavior(Behavior::Status(500));
    let r = get(&envoy, &[("x-tester", "yes")]);
    assert_eq!(
        (r.status, r.served_by()),
        (500, Some("shop-v2")),
        "the third error reaches v2: the leaver did not count as an error"
    );
    assert_eq!(
        stat(&envoy, "sluice.breaker.cluster.shop-v2.trips"),
        1,
        "the third error trips: the leaver did not reset the streak"
    );
    let r = get(&envoy, &[("x-tester", "yes")]);
    assert_eq!(r.status, 503);
    assert_eq!(r.header_str(REJECT_HEADER), Some("shop-v2 open"));
    assert_eq!(v2.request_count(), 4);
}

#[test]
fn batched_counters_are_published_without_breakers_or_schedules() {
    // No breaker and no schedule: no housekeeping tick, so the first increment after a flush
    // must start the worker's tick itself, and the tick stops again once all is published.
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let mut config = config(1000);
    config
        .as_object_mut()
        .and_then(|sections| sections.remove("breaker"))
        .expect("the test config has a breaker section");
    let envoy = start(&v1, &v2, &config);
    for round in 1..=2u64 {
        for _ in 0..10 {
            let r = get(&envoy, &[("x-tester", "yes")]);
            assert_eq!((r.status, r.served_by()), (200, Some("shop-v2")));
        }
        settled(&envoy, "sluice.router.rule.testers.matched", 10 * round);
        // Idle for longer than a flush period: the tick stops, and the next round restarts it.
        std::thread::sleep(Duration::from_millis(2500));
    }
    assert_eq!(v2.request_count(), 20);
}

#[test]
fn no_matching_rule_is_a_404_and_overflow_a_503() {
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let mut config = config(1000);
    config["breaker"]["breakers"][0]["maxConcurrentRequests"] = json!(1);
    let envoy = start(&v1, &v2, &config);
    let r = client::send(&Request::get(envoy.listener_port(LISTENER), "/").authority("other"))
        .expect("request");
    assert_eq!(r.status, 404);
    assert_eq!(r.header_str("x-sluice-router"), Some("no-match"));
    assert_eq!(stat(&envoy, "sluice.router.no_match"), 1);

    // One request holds v1's only slot; the next is refused with overflow.
    let v1_user = (0..100)
        .map(|i| format!("user-{i}"))
        .find(|u| get(&envoy, &[("end-user", u)]).served_by() == Some("shop-v1"))
        .expect("a user on v1");
    v1.set_behavior(Behavior::Delay(Duration::from_millis(1500)));
    let held = std::thread::spawn({
        let request = request(&envoy, &[("end-user", &v1_user)]);
        move || client::send(&request)
    });
    envoy
        .wait_for_stat(
            "wasmcustom.sluice.breaker.cluster.shop-v1.in_flight",
            |v| v == 1,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let r = get(&envoy, &[("end-user", &v1_user)]);
    assert_eq!(r.status, 503);
    assert_eq!(r.header_str(REJECT_HEADER), Some("shop-v1 overflow"));
    let first = held.join().expect("thread").expect("held request");
    assert_eq!(first.status, 200);
    assert!(stat(&envoy, "sluice.breaker.cluster.shop-v1.rejected_overflow") >= 1);
}

#[test]
fn envoy_refuses_a_bad_suite_config_and_logs_which_section() {
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    let mut bad = config(1000);
    bad["fault"]["faults"][0]["abort"]["httpStatus"] = json!(99);
    let log = Envoy::start_expect_failure(&bootstrap(&v1, &v2, &bad));
    assert!(
        log.contains("sluice-suite: fault: faults[0] (rule \"broken\"): abort."),
        "{log}"
    );
    let mut no_canary = config(1000);
    no_canary.as_object_mut().expect("object").remove("canary");
    let log = Envoy::start_expect_failure(&bootstrap(&v1, &v2, &no_canary));
    assert!(
        log.contains("sluice-suite: router: rule \"rollout\" routes to split \"rollout\""),
        "{log}"
    );
}

/// `maxEjectionPercent` in the suite (the breaker filter's glue): a 50/50 split of one host's
/// two subsets, both failing, breakers capped at 50%. v2 opens first (1 of 2), so the split
/// fails over to v1, whose breaker then stays closed however often it fails (2 of 2 would be
/// 100%): the split keeps reaching v1 instead of answering `all-members-unavailable`.
#[test]
fn max_ejection_percent_keeps_the_split_one_member() {
    const V1: &str = "outbound|9080|v1|shop";
    const V2: &str = "outbound|9080|v2|shop";
    let (v1, v2) = (Upstream::start("shop-v1"), Upstream::start("shop-v2"));
    v1.set_behavior(Behavior::Status(500));
    v2.set_behavior(Behavior::Status(500));
    let breaker = |cluster: &str| {
        json!({"cluster": cluster, "consecutiveErrors": 3, "interval": "1h",
               "baseEjectionTime": "120s", "maxEjectionPercent": 50})
    };
    let config = json!({
        "router": {"virtualHosts": [{"name": "shop", "domains": ["shop"], "rules": [
            {"name": "testers", "match": [{"headers": {"x-tester": {"exact": "yes"}}}],
             "route": {"cluster": V2}},
            {"name": "rollout", "route": {"split": "rollout"}}]}]},
        "canary": {"afterRouter": true, "splits": [{"name": "rollout",
            "members": [{"cluster": V1, "weight": 50}, {"cluster": V2, "weight": 50}]}]},
        "breaker": {"afterRouter": true, "breakers": [breaker(V1), breaker(V2)]}
    });
    let yaml = Bootstrap::new()
        .cluster(V1, v1.port())
        .cluster(V2, v2.port())
        .wasm_filter("suite", &config.to_string())
        .route_cluster_header()
        .render();
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e:#}\n{yaml}"));
    for _ in 0..3 {
        let r = get(&envoy, &[("x-tester", "yes")]);
        assert_eq!((r.status, r.served_by()), (500, Some("shop-v2")));
    }
    let r = get(&envoy, &[("x-tester", "yes")]);
    assert_eq!(r.header_str(REJECT_HEADER), Some("open"));
    assert_eq!(
        stat(&envoy, "sluice.breaker.cluster.outbound_9080_v2_shop.trips"),
        1
    );

    // The split fails over to v1, which fails 12 times (four trips' worth) and stays closed.
    for i in 0..12 {
        let r = get(&envoy, &[("end-user", &format!("user-{i}"))]);
        assert_eq!(
            (r.status, r.served_by()),
            (500, Some("shop-v1")),
            "request {i}: {:?}\n{}",
            r.header_str("x-sluice-canary"),
            envoy.log()
        );
    }
    assert_eq!(v1.request_count(), 12);
    assert_eq!(v2.request_count(), 3);
    let v1_stat = |what: &str| {
        stat(
            &envoy,
            &format!("sluice.breaker.cluster.outbound_9080_v1_shop.{what}"),
        )
    };
    assert_eq!((v1_stat("trips"), v1_stat("trip_skipped_cap")), (0, 4));
    assert!(
        envoy.log().contains(&format!("{V1} kept closed")),
        "{}",
        envoy.log()
    );
}
