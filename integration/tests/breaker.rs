//! The breaker filter through a real Envoy with two workers (`--concurrency 2`): every request
//! opens its own connection, so requests land on both workers and the breaker state must be
//! shared (proxy-wasm shared data, vm_id "sluice") for these counts to come out exact.
//!
//! Build the module first: `cargo build --release --target wasm32-wasip1 -p sluice-breaker`.

use std::time::{Duration, Instant};

use sluice_integration::bootstrap::Bootstrap;
use sluice_integration::client::{self, Request, Response};
use sluice_integration::envoy::{Envoy, EnvoyOptions};
use sluice_integration::upstream::{Behavior, Upstream};

const REJECT_HEADER: &str = sluice_core::wire::BREAKER_REJECT_HEADER;

fn start(config: &str) -> Envoy {
    Envoy::start_with(EnvoyOptions {
        config_yaml: config.to_owned(),
        concurrency: 2,
        ..EnvoyOptions::default()
    })
    .unwrap_or_else(|e| panic!("Envoy did not start: {e:#}"))
}

fn stat(envoy: &Envoy, cluster: &str, what: &str) -> u64 {
    let name = format!("wasmcustom.sluice.breaker.cluster.{cluster}.{what}");
    envoy
        .stat(&name)
        .unwrap_or_else(|| panic!("no stat {name}"))
}

/// Waits (generously: this is not a timing assertion) for a breaker gauge to settle.
fn wait_gauge(envoy: &Envoy, cluster: &str, what: &str, want: u64) {
    let name = format!("wasmcustom.sluice.breaker.cluster.{cluster}.{what}");
    envoy
        .wait_for_stat(&name, |v| v == want, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Asserts both workers accepted connections, so the counts above crossed workers.
fn assert_both_workers_served(envoy: &Envoy) {
    let stats = envoy.stats_text().expect("stats");
    for worker in ["worker_0", "worker_1"] {
        let accepted: u64 = stats
            .lines()
            .filter(|l| l.starts_with("listener.127.0.0.1_"))
            .filter(|l| l.contains(&format!(".{worker}.downstream_cx_total: ")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!(accepted > 0, "{worker} accepted no connection:\n{stats}");
    }
}

fn get(envoy: &Envoy) -> Response {
    client::send(&Request::get(envoy.listener_port("listener_test"), "/")).expect("request")
}

fn get_parallel(envoy: &Envoy, n: usize, parallelism: usize) -> Vec<Response> {
    let port = envoy.listener_port("listener_test");
    client::send_many(vec![Request::get(port, "/"); n], parallelism)
        .into_iter()
        .map(|r| r.expect("request"))
        .collect()
}

/// A breaker rejection: 503 with `x-sluice-breaker: <why>`, naming no cluster (the default,
/// without `detailedReplies`).
fn rejected(response: &Response, why: &str) -> bool {
    response.status == 503 && response.header_str(REJECT_HEADER) == Some(why)
}

/// Polls until a request gets through the breaker (the ejection time is over), at most
/// `deadline` (generous). Returns that response.
fn first_admitted(envoy: &Envoy, deadline: Duration) -> Response {
    let until = Instant::now() + deadline;
    loop {
        let response = get(envoy);
        if response.header(REJECT_HEADER).is_none() {
            return response;
        }
        assert!(
            Instant::now() < until,
            "breaker still open after {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Alone (`afterRouter: false`) the breaker keys on the cluster Envoy's route selected
/// (`xds.cluster_name`). N-1 failures arrive in parallel on both workers; the N-th trips.
#[test]
fn opens_after_exactly_n_consecutive_errors_across_workers() {
    const N: usize = 40;
    let flaky = Upstream::start("flaky");
    flaky.set_behavior(Behavior::Status(500));
    let config = Bootstrap::new()
        .cluster("flaky", flaky.port())
        .route_to_cluster("flaky")
        .wasm_filter(
            "breaker",
            r#"{"breakers": [{"cluster": "flaky", "consecutiveErrors": 40,
                "baseEjectionTime": "60s", "maxEjectionTime": "600s"}]}"#,
        )
        .render();
    let envoy = start(&config);
    wait_gauge(&envoy, "flaky", "state", 0);

    let burst = get_parallel(&envoy, N - 1, 16);
    assert!(
        burst
            .iter()
            .all(|r| r.status == 500 && r.served_by() == Some("flaky")),
        "the first N-1 failures all reach the upstream"
    );
    // No update was lost: the N-th error is the one that trips, not a later one.
    let nth = get(&envoy);
    assert_eq!((nth.status, nth.served_by()), (500, Some("flaky")));
    let after = get_parallel(&envoy, 20, 8);
    assert!(
        after.iter().all(|r| rejected(r, "open")),
        "{:?}",
        client::status_counts(&after)
    );
    assert_eq!(
        flaky.request_count(),
        N,
        "rejections never reach the upstream"
    );

    assert_eq!(stat(&envoy, "flaky", "trips"), 1);
    assert_eq!(stat(&envoy, "flaky", "requests"), N as u64);
    assert_eq!(stat(&envoy, "flaky", "rejected_open"), 20);
    assert_eq!(
        envoy.stat("cluster.flaky.upstream_rq_total"),
        Some(N as u64)
    );
    wait_gauge(&envoy, "flaky", "state", 1);
    assert_both_workers_served(&envoy);
}

/// Half-open: one probe at a time (across workers); a failed probe reopens with a doubled
/// ejection; a successful one closes.
#[test]
fn half_open_probes_reopen_with_backoff_then_close_on_success() {
    let svc = Upstream::start("svc");
    svc.set_behavior(Behavior::Status(503));
    let config = Bootstrap::new()
        .cluster("svc", svc.port())
        .route_to_cluster("svc")
        .wasm_filter(
            "breaker",
            r#"{"breakers": [{"cluster": "svc", "consecutiveErrors": 3, "interval": "1h",
                "baseEjectionTime": "2s", "maxEjectionTime": "10s", "halfOpenProbes": 1}]}"#,
        )
        .render();
    let envoy = start(&config);
    for _ in 0..3 {
        assert_eq!(get(&envoy).served_by(), Some("svc"));
    }
    assert!(rejected(&get(&envoy), "open"));
    assert_eq!(svc.request_count(), 3);

    // Ejection over: the probe reaches the still failing upstream and reopens the breaker.
    let probe = first_admitted(&envoy, Duration::from_secs(30));
    assert_eq!((probe.status, probe.served_by()), (503, Some("svc")));
    assert!(rejected(&get(&envoy), "open"));
    assert_eq!(svc.request_count(), 4);
    assert!(
        envoy
            .log()
            .contains("sluice-breaker: svc open for 2000ms (trip 1)")
    );
    assert!(
        envoy
            .log()
            .contains("sluice-breaker: svc open for 4000ms (trip 2)"),
        "{}",
        envoy.log()
    );
    assert_eq!(stat(&envoy, "svc", "trips"), 2);

    // Next half-open: a slow upstream holds the one probe; parallel requests meanwhile are
    // rejected on both workers, so exactly one reaches the upstream.
    svc.set_behavior(Behavior::Delay(Duration::from_millis(1500)));
    let until = Instant::now() + Duration::from_secs(30);
    let port = envoy.listener_port("listener_test");
    let responses = loop {
        let batch = client::send_many(vec![Request::get(port, "/"); 12], 12);
        let batch: Vec<Response> = batch.into_iter().map(|r| r.expect("request")).collect();
        if batch.iter().any(|r| r.header(REJECT_HEADER).is_none()) {
            break batch;
        }
        assert!(Instant::now() < until, "breaker never half-opened");
        std::thread::sleep(Duration::from_millis(200));
    };
    let served: Vec<_> = responses
        .iter()
        .filter(|r| r.served_by() == Some("svc"))
        .collect();
    assert_eq!(
        served.len(),
        1,
        "one probe at a time: {:?}",
        client::status_counts(&responses)
    );
    assert!(
        responses
            .iter()
            .filter(|r| r.served_by().is_none())
            .all(|r| rejected(r, "open"))
    );
    assert_eq!(served[0].status, 200);

    // The probe succeeded: closed, traffic flows again.
    svc.set_behavior(Behavior::Ok);
    let after = get_parallel(&envoy, 20, 8);
    assert!(
        after
            .iter()
            .all(|r| r.status == 200 && r.served_by() == Some("svc"))
    );
    assert!(envoy.log().contains("sluice-breaker: svc closed"));
    wait_gauge(&envoy, "svc", "state", 0);
}

/// A probe that never finishes (an upstream that hangs, as a client's slow upload would; the
/// route has no timeout) cannot hold the breaker half-open: past `probeTimeout` the next
/// admission counts it as a failed probe, reopens with the next ejection and frees the slot,
/// and the episode after that probes afresh and closes.
#[test]
fn a_probe_past_its_probe_timeout_fails_and_frees_the_slot() {
    let svc = Upstream::start("svc");
    svc.set_behavior(Behavior::Status(503));
    let config = Bootstrap::new()
        .cluster("svc", svc.port())
        .route_to_cluster("svc")
        .wasm_filter(
            "breaker",
            r#"{"breakers": [{"cluster": "svc", "consecutiveErrors": 3, "interval": "1h",
                "baseEjectionTime": "2s", "maxEjectionTime": "10s", "halfOpenProbes": 1,
                "probeTimeout": "1s"}]}"#,
        )
        .render();
    let envoy = start(&config);
    for _ in 0..3 {
        assert_eq!(get(&envoy).served_by(), Some("svc"));
    }
    assert!(rejected(&get(&envoy), "open"));

    // The ejection ends; the probe reaches an upstream that never answers.
    svc.set_behavior(Behavior::Hang);
    let port = envoy.listener_port("listener_test");
    let until = Instant::now() + Duration::from_secs(30);
    while stat(&envoy, "svc", "requests") < 4 {
        // Each attempt holds the probe slot if it is admitted, so send them from threads.
        std::thread::spawn(move || {
            let _ = client::send(&Request::get(port, "/").timeout(Duration::from_secs(60)));
        });
        assert!(Instant::now() < until, "breaker never half-opened");
        std::thread::sleep(Duration::from_millis(300));
    }
    let admitted_at = Instant::now();
    assert_eq!(svc.request_count(), 4, "one probe reached the upstream");
    // Within probeTimeout the slot stays taken: rejected as open (not asserted by time, only
    // that nothing else reaches the upstream).
    // Past it: the next admission reopens the breaker (trip 2, 4 s) and is rejected.
    let log_line = "sluice-breaker: svc open for 4000ms (trip 2): a probe overran probeTimeout";
    let until = Instant::now() + Duration::from_secs(30);
    while !envoy.log().contains(log_line) {
        let r = get(&envoy);
        assert!(rejected(&r, "open"), "status {}", r.status);
        assert!(
            Instant::now() < until,
            "the stalled probe was never reclaimed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(admitted_at.elapsed() < Duration::from_secs(25));
    assert_eq!(stat(&envoy, "svc", "trips"), 2);
    assert_eq!(
        svc.request_count(),
        4,
        "no other request reached the upstream"
    );

    // The next episode probes afresh: a healthy upstream closes the breaker.
    svc.set_behavior(Behavior::Ok);
    let probe = first_admitted(&envoy, Duration::from_secs(30));
    assert_eq!((probe.status, probe.served_by()), (200, Some("svc")));
    assert!(envoy.log().contains("sluice-breaker: svc closed"));
    let after = get_parallel(&envoy, 10, 5);
    assert!(after.iter().all(|r| r.status == 200));
    wait_gauge(&envoy, "svc", "state", 0);
}

/// Error ratio over the window, with many parallel outcomes from both workers: exactly at the
/// minimum volume and threshold it trips, so no window update was lost.
#[test]
fn error_ratio_trips_exactly_at_volume_and_threshold_under_contention() {
    // Large enough that the two workers' outcome writes collide many times: a lost update
    // (a set without compare-and-set) would leave the window short of the volume.
    const VOLUME: u32 = 3000;
    let svc = Upstream::start("svc");
    let config = Bootstrap::new()
        .cluster("svc", svc.port())
        .route_to_cluster("svc")
        .without_access_log()
        .wasm_filter(
            "breaker",
            &format!(
                r#"{{"breakers": [{{"cluster": "svc", "interval": "1h", "baseEjectionTime": "60s",
                    "errorRatio": {{"thresholdPercent": 50, "minRequestVolume": {VOLUME}}}}}]}}"#
            ),
        )
        .render();
    let envoy = start(&config);
    // VOLUME-1 outcomes, just under half of them errors: below both volume and threshold.
    let errors = VOLUME / 2 - 1;
    svc.set_behavior(Behavior::FailNext {
        count: errors,
        status: 502,
    });
    let burst = get_parallel(&envoy, VOLUME as usize - 1, 64);
    let counts = client::status_counts(&burst);
    assert_eq!(counts.get(&502), Some(&u64::from(errors)), "{counts:?}");
    assert_eq!(
        counts.get(&200),
        Some(&u64::from(VOLUME - 1 - errors)),
        "{counts:?}"
    );
    // The last one of the volume, an error: exactly 50%.
    svc.set_behavior(Behavior::FailNext {
        count: 1,
        status: 502,
    });
    assert_eq!(get(&envoy).served_by(), Some("svc"));
    assert!(
        rejected(&get(&envoy), "open"),
        "the {VOLUME}th outcome must trip the breaker: an outcome was lost"
    );
    assert_eq!(svc.request_count(), VOLUME as usize);
    // The filter saw every request Envoy forwarded.
    assert_eq!(stat(&envoy, "svc", "requests"), u64::from(VOLUME));
    assert_eq!(
        envoy.stat("cluster.svc.upstream_rq_total"),
        Some(u64::from(VOLUME))
    );
    assert_both_workers_served(&envoy);
}

/// The concurrency limit holds across workers; the in-flight count returns to zero after
/// upstream timeouts and after clients that give up, and the freed slots are usable again.
#[test]
fn concurrency_limit_overflows_and_slots_come_back_after_timeouts_and_client_resets() {
    const LIMIT: usize = 5;
    let slow = Upstream::start("slow");
    slow.set_behavior(Behavior::Hang);
    let config = Bootstrap::new()
        .cluster("slow", slow.port())
        .route_to_cluster("slow")
        .route_timeout(Duration::from_secs(2))
        .wasm_filter(
            "breaker",
            r#"{"breakers": [{"cluster": "slow", "maxConcurrentRequests": 5}]}"#,
        )
        .render();
    let envoy = start(&config);
    let port = envoy.listener_port("listener_test");

    // Round 1: the upstream hangs; the route timeout (2s) ends the admitted ones with 504.
    let responses = get_parallel(&envoy, 30, 30);
    let timeouts = responses.iter().filter(|r| r.status == 504).count();
    let overflows = responses.iter().filter(|r| rejected(r, "overflow")).count();
    assert_eq!(
        (timeouts, overflows),
        (LIMIT, 30 - LIMIT),
        "{:?}",
        client::status_counts(&responses)
    );
    assert_eq!(slow.request_count(), LIMIT);
    wait_gauge(&envoy, "slow", "in_flight", 0);

    // Round 2: clients give up after 500ms and close their connections (the route timeout is
    // 2s, so Envoy sees downstream resets); every slot must come back.
    let impatient = vec![Request::get(port, "/").timeout(Duration::from_millis(500)); 30];
    let results = client::send_many(impatient, 30);
    let overflowed = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| rejected(r, "overflow")))
        .count();
    assert_eq!(
        overflowed,
        30 - LIMIT,
        "the 5 admitted ones were cut by the client"
    );
    assert_eq!(slow.request_count(), 2 * LIMIT);
    wait_gauge(&envoy, "slow", "in_flight", 0);

    // Round 3: capacity is whole again: exactly LIMIT more reach the upstream.
    slow.set_behavior(Behavior::Delay(Duration::from_millis(1000)));
    let responses = get_parallel(&envoy, 30, 30);
    let served = responses.iter().filter(|r| r.status == 200).count();
    assert!(served >= LIMIT, "{:?}", client::status_counts(&responses));
    assert!(
        responses
            .iter()
            .all(|r| r.status == 200 || rejected(r, "overflow"))
    );
    wait_gauge(&envoy, "slow", "in_flight", 0);
    assert_eq!(
        stat(&envoy, "slow", "rejected_overflow") + stat(&envoy, "slow", "requests"),
        90
    );
}

/// Chained (`afterRouter: true`) the breaker keys on `x-sluice-cluster`, the header Envoy's
/// route forwards on; one cluster's breaker does not affect another's.
#[test]
fn after_router_keys_on_the_cluster_header() {
    let bad = Upstream::start("bad");
    bad.set_behavior(Behavior::Status(500));
    let good = Upstream::start("good");
    let config = Bootstrap::new()
        .cluster("bad", bad.port())
        .cluster("good", good.port())
        .route_cluster_header()
        .wasm_filter(
            "breaker",
            r#"{"afterRouter": true, "default": {"consecutiveErrors": 2, "baseEjectionTime": "60s"}}"#,
        )
        .render();
    let envoy = start(&config);
    let port = envoy.listener_port("listener_test");
    let to = |cluster: &str| {
        client::send(&Request::get(port, "/").header("x-sluice-cluster", cluster)).expect("request")
    };
    assert_eq!(to("bad").status, 500);
    assert_eq!(to("bad").status, 500);
    assert!(rejected(&to("bad"), "open"));
    assert_eq!(to("good").served_by(), Some("good"));
    assert_eq!(bad.request_count(), 2);
    // Clusters met at run time (through `default`) get metrics too.
    assert_eq!(stat(&envoy, "bad", "trips"), 1);
    assert_eq!(stat(&envoy, "good", "trips"), 0);
}

/// The rejection names the cluster only when the operator turns `detailedReplies` on; by
/// default a client learns the reason and nothing about internal cluster names.
#[test]
fn replies_name_the_cluster_only_with_detailed_replies() {
    let bad = Upstream::start("bad");
    bad.set_behavior(Behavior::Status(500));
    for (detailed, want) in [(false, "open"), (true, "outbound|9080|v2|bad open")] {
        let config = Bootstrap::new()
            .cluster("outbound|9080|v2|bad", bad.port())
            .route_cluster_header()
            .wasm_filter(
                "breaker",
                &format!(
                    r#"{{"afterRouter": true, "detailedReplies": {detailed},
                        "default": {{"consecutiveErrors": 1, "baseEjectionTime": "60s"}}}}"#
                ),
            )
            .render();
        let envoy = start(&config);
        let port = envoy.listener_port("listener_test");
        let to = || {
            client::send(
                &Request::get(port, "/").header("x-sluice-cluster", "outbound|9080|v2|bad"),
            )
            .expect("request")
        };
        assert_eq!(to().status, 500);
        let r = to();
        assert_eq!(r.status, 503);
        assert_eq!(
            r.header_str(REJECT_HEADER),
            Some(want),
            "detailed {detailed}"
        );
        assert!(!r.text().contains("outbound"), "body {:?}", r.text());
    }
}

/// A bad plugin config stops Envoy with the breaker's reason in the log.
#[test]
fn bad_configs_are_refused_with_the_reason() {
    for (config, reason) in [
        (
            r#"{"breakers": [{"cluster": "c", "consecutiveErrors": 0}]}"#,
            "consecutiveErrors must be at least 1",
        ),
        (
            r#"{"breakers": [{"cluster": "c", "consecutiveErrors": 1, "maxEjectionTime": "1s"}]}"#,
            "maxEjectionTime (1s) is shorter than baseEjectionTime (30s)",
        ),
        (
            r#"{"breakers": [{"cluster": "c", "consecutiveErors": 1}]}"#,
            "unknown field `consecutiveErors`",
        ),
    ] {
        let bootstrap = Bootstrap::new()
            .cluster("c", 9)
            .route_to_cluster("c")
            .wasm_filter("breaker", config)
            .render();
        let log = Envoy::start_expect_failure(&bootstrap);
        assert!(log.contains("sluice-breaker: refusing config:"), "{log}");
        assert!(log.contains(reason), "expected {reason:?} in:\n{log}");
    }
}

/// `countAs` follows Envoy's response flags: a reset (`UC`), a refused connection (`UF`) and a
/// route timeout (`UT`) each trip the breaker that counts that kind; a plain 500 trips none of
/// them. The breaker's own 503s never count (the third request of each is rejected, and the
/// upstream saw only two).
#[test]
fn outcome_kinds_follow_envoy_response_flags() {
    let resets = Upstream::start("resets");
    resets.set_behavior(Behavior::Reset);
    let hangs = Upstream::start("hangs");
    hangs.set_behavior(Behavior::Hang);
    let errors = Upstream::start("errors");
    errors.set_behavior(Behavior::Status(500));
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let breaker = |cluster: &str, kinds: &str| {
        format!(
            r#"{{"cluster": "{cluster}", "consecutiveErrors": 2, "baseEjectionTime": "60s",
                "countAs": {kinds}}}"#
        )
    };
    let plugin_config = format!(
        r#"{{"afterRouter": true, "breakers": [{}, {}, {}, {}]}}"#,
        breaker("resets", r#"["reset"]"#),
        breaker("down", r#"["connect-failure"]"#),
        breaker("hangs", r#"["timeout"]"#),
        breaker(
            "errors",
            r#"["connect-failure", "reset", "timeout", "gateway-error"]"#
        ),
    );
    let config = Bootstrap::new()
        .cluster("resets", resets.port())
        .cluster("down", closed_port)
        .cluster("hangs", hangs.port())
        .cluster("errors", errors.port())
        .route_cluster_header()
        .route_timeout(Duration::from_secs(1))
        .wasm_filter("breaker", &plugin_config)
        .render();
    let envoy = start(&config);
    let port = envoy.listener_port("listener_test");
    let to = |cluster: &str| {
        client::send(&Request::get(port, "/").header("x-sluice-cluster", cluster)).expect("request")
    };
    for (cluster, status) in [("resets", 503), ("down", 503), ("hangs", 504)] {
        assert_eq!(to(cluster).status, status, "{cluster}");
        assert_eq!(to(cluster).status, status, "{cluster}");
        assert!(rejected(&to(cluster), "open"), "{cluster} must be open");
        assert_eq!(stat(&envoy, cluster, "trips"), 1, "{cluster}");
    }
    assert_eq!(resets.request_count(), 2);
    assert_eq!(hangs.request_count(), 2);
    for _ in 0..4 {
        assert_eq!(to("errors").status, 500);
    }
    assert_eq!(stat(&envoy, "errors", "trips"), 0);
}

/// `maxEjectionPercent` caps the open share of a host's breakers, as Envoy's outlier detection
/// caps ejected hosts: two subsets of one host (`outbound|9080|<subset>|reviews`), both
/// upstreams failing. With a cap of 50 the first subset's breaker opens (1 of 2 = 50%) and the
/// second's trips are skipped (2 of 2 would be 100%): it stays closed, so its requests still
/// reach its upstream, and every skipped trip is counted. Without the cap both open.
#[test]
fn max_ejection_percent_keeps_the_last_breaker_of_a_host_closed() {
    const V1: &str = "outbound|9080|v1|reviews";
    const V2: &str = "outbound|9080|v2|reviews";
    for cap in [Some(50), None] {
        let v1 = Upstream::start("v1");
        let v2 = Upstream::start("v2");
        v1.set_behavior(Behavior::Status(500));
        v2.set_behavior(Behavior::Status(500));
        let cap_field = cap.map_or(String::new(), |c| format!(r#", "maxEjectionPercent": {c}"#));
        let breaker = |cluster: &str| {
            format!(
                r#"{{"cluster": "{cluster}", "consecutiveErrors": 3, "interval": "1h",
                    "baseEjectionTime": "60s"{cap_field}}}"#
            )
        };
        let config = Bootstrap::new()
            .cluster(V1, v1.port())
            .cluster(V2, v2.port())
            .route_cluster_header()
            .wasm_filter(
                "breaker",
                &format!(
                    r#"{{"afterRouter": true, "breakers": [{}, {}]}}"#,
                    breaker(V1),
                    breaker(V2)
                ),
            )
            .render();
        let envoy = start(&config);
        let port = envoy.listener_port("listener_test");
        let to = |cluster: &str| {
            client::send(&Request::get(port, "/").header("x-sluice-cluster", cluster))
                .expect("request")
        };
        // v1 fails three times and opens: the first of the host's two breakers may.
        for _ in 0..3 {
            assert_eq!(to(V1).served_by(), Some("v1"));
        }
        assert!(rejected(&to(V1), "open"), "cap {cap:?}");
        assert_eq!(v1.request_count(), 3);
        assert_eq!(stat(&envoy, "outbound_9080_v1_reviews", "trips"), 1);

        // v2 fails as much, three trips' worth.
        let responses: Vec<Response> = (0..9).map(|_| to(V2)).collect();
        let v2_trips = stat(&envoy, "outbound_9080_v2_reviews", "trips");
        let v2_skipped = stat(&envoy, "outbound_9080_v2_reviews", "trip_skipped_cap");
        match cap {
            Some(_) => {
                assert!(
                    responses
                        .iter()
                        .all(|r| r.status == 500 && r.served_by() == Some("v2")),
                    "a capped breaker stays closed: {:?}",
                    client::status_counts(&responses)
                );
                assert_eq!(v2.request_count(), 9);
                assert_eq!((v2_trips, v2_skipped), (0, 3));
                wait_gauge(&envoy, "outbound_9080_v2_reviews", "state", 0);
                let log = envoy.log();
                let lines = log.matches(&format!("{V2} kept closed")).count();
                // At most once per interval on each of the two workers.
                assert!((1..=2).contains(&lines), "{lines} lines:\n{log}");
                assert!(log.contains("maxEjectionPercent is 50"), "{log}");
            }
            None => {
                assert_eq!(v2.request_count(), 3, "without a cap v2 opens too");
                assert!(responses[3..].iter().all(|r| rejected(r, "open")));
                assert_eq!((v2_trips, v2_skipped), (1, 0));
                wait_gauge(&envoy, "outbound_9080_v2_reviews", "state", 1);
            }
        }
        // v1 is still open either way.
        assert!(rejected(&to(V1), "open"));
        wait_gauge(&envoy, "outbound_9080_v1_reviews", "state", 1);
    }
}
