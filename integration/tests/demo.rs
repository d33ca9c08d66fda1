//! The demo tour (`cargo xtask demo`) through a real Envoy 1.40, with its facts re-checked here
//! so the demo can never silently rot: who served, the canary share (binomial bounds,
//! p < 1e-6), stickiness, the fault statuses and delays, the breaker's trip, failover and
//! recovery, the counters Envoy shows, and the live step (`sluice serve`, a weight changed on
//! disk, the split moved in the same Envoy process).
//!
//! Needs the four modules: `cargo xtask build-wasm`.

use sluice_integration::binomial;
use sluice_integration::demo::{self, DemoOptions, Verdict};

#[test]
fn the_demo_tour_behaves_as_the_mesh_says() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let options = DemoOptions {
        out_dir: out_dir.path().join("demo"),
        ..DemoOptions::default()
    };
    let mut progress = Vec::new();
    let report = demo::run(&options, &mut progress).unwrap_or_else(|e| panic!("{e:#}"));
    let rendered = report.render();
    let context = format!("{}{rendered}", String::from_utf8_lossy(&progress));

    // Every step ran (none skipped for missing builder support) and passed its own checks.
    assert_eq!(report.steps.len(), 6, "{context}");
    for step in &report.steps {
        assert_eq!(
            step.verdict,
            Verdict::Passed,
            "step {}:\n{context}",
            step.number
        );
    }
    assert!(report.config_path.is_file(), "{context}");

    // 1. routing.
    let n = demo::ROUTING_REQUESTS as u64;
    let routing = report.facts.routing.as_ref().expect("step 1 facts");
    assert_eq!(routing.jason.get("reviews-v2"), Some(&n), "{context}");
    assert_eq!(routing.jason.len(), 1, "{context}");
    assert_eq!(routing.others.get("reviews-v1"), Some(&n), "{context}");
    assert_eq!(routing.others.len(), 1, "{context}");

    // 2. the canary split and stickiness.
    let split = report.facts.split.as_ref().expect("step 2 facts");
    let requests = demo::SPLIT_REQUESTS as u64;
    let v1 = split.served.get("ratings-v1").copied().unwrap_or(0);
    let v2 = split.served.get("ratings-v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, requests, "{context}");
    binomial::assert_plausible("demo split: requests to ratings-v2", v2, requests, 0.1);
    let sticky = split.sticky.as_ref().expect("stickiness generated");
    assert_eq!(sticky.len(), demo::STICKY_USERS, "{context}");
    for (user, served) in sticky {
        assert_eq!(served.len(), 1, "{user} moved: {served:?}\n{context}");
        assert_eq!(
            served.values().sum::<u64>(),
            demo::REQUESTS_PER_STICKY_USER as u64,
            "{user}: {served:?}"
        );
    }
    let on_v2 = demo::users_on(sticky, "ratings-v2");
    // The sticky hash is fixed across workers, restarts and versions, so the same users land
    // on v2 every run; the failover check below needs at least one of them.
    assert!(!on_v2.is_empty(), "no sticky user on v2\n{context}");

    // 3. faults.
    let fault = report.facts.fault.as_ref().expect("step 3 facts");
    assert_eq!(
        fault.abort_statuses.get(&demo::ABORT_STATUS),
        Some(&(demo::ABORT_REQUESTS as u64)),
        "{context}"
    );
    assert_eq!(fault.abort_reached_backend, 0, "{context}");
    assert_eq!(fault.delayed.len(), demo::DELAY_REQUESTS, "{context}");
    for (status, latency) in &fault.delayed {
        assert_eq!(*status, 200, "{context}");
        assert!(
            *latency >= demo::FAULT_DELAY.mul_f64(0.95),
            "{latency:?}\n{context}"
        );
    }

    // 4. the breaker: trip, rejection, failover, recovery.
    let breaker = report.facts.breaker.as_ref().expect("step 4 facts");
    let upstream_errors: Vec<_> = breaker
        .tripping
        .iter()
        .take_while(|o| o.breaker.is_none())
        .collect();
    assert!(
        upstream_errors.len() as u64 >= demo::BREAKER_CONSECUTIVE_ERRORS,
        "{context}"
    );
    for error in &upstream_errors {
        assert_eq!(error.status, 503, "{context}");
        assert_eq!(error.served_by.as_deref(), Some("ratings-v2"), "{context}");
    }
    let rejection = breaker
        .tripping
        .get(upstream_errors.len())
        .expect("a rejection after the errors");
    assert_eq!(rejection.status, 503, "{context}");
    assert_eq!(rejection.served_by, None, "{context}");
    // The reason only: no internal cluster name reaches the client by default.
    assert_eq!(rejection.breaker.as_deref(), Some("open"), "{context}");
    assert_eq!(breaker.backend_requests_while_open, 0, "{context}");
    assert_eq!(
        breaker.failover.get("ratings-v1"),
        Some(&(demo::FAILOVER_REQUESTS as u64)),
        "{context}"
    );
    assert_eq!(
        breaker.failover_sticky_v2_users.keys().collect::<Vec<_>>(),
        ["ratings-v1"],
        "{context}"
    );
    let recovered_after = breaker.recovered_after.expect("the breaker closed");
    assert!(recovered_after >= demo::BREAKER_EJECTION, "{context}");
    let after = demo::RECOVERED_REQUESTS as u64;
    binomial::assert_plausible(
        "demo split after recovery: requests to ratings-v2",
        breaker.recovered.get("ratings-v2").copied().unwrap_or(0),
        after,
        0.1,
    );
    assert_eq!(
        breaker.recovered_sticky_v2_users.keys().collect::<Vec<_>>(),
        ["ratings-v2"],
        "{context}"
    );

    // 5. counters: each filter counted what the tour did.
    let counters = &report.facts.counters;
    let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
    assert_eq!(
        counter("wasmcustom.sluice.router.rule.reviews-jason.matched"),
        n,
        "{context}"
    );
    assert_eq!(
        counter("wasmcustom.sluice.fault.rule.reviews-chaos-abort.aborts_injected"),
        demo::ABORT_REQUESTS as u64,
        "{context}"
    );
    assert_eq!(
        counter("wasmcustom.sluice.breaker.cluster.outbound_9080_v2_ratings.trips"),
        1,
        "{context}"
    );

    // 6. live: the split moved in the same process, with no listener rebuilt, and the proxy's
    // modules came from serve over HTTP.
    let live = report.facts.live.as_ref().expect("step 6 facts");
    let requests = demo::live::LIVE_REQUESTS as u64;
    let v2 = |counts: &std::collections::BTreeMap<String, u64>| {
        counts.get("ratings-v2").copied().unwrap_or(0)
    };
    let v1 = |counts: &std::collections::BTreeMap<String, u64>| {
        counts.get("ratings-v1").copied().unwrap_or(0)
    };
    assert_eq!(v1(&live.before) + v2(&live.before), requests, "{context}");
    assert_eq!(v1(&live.after) + v2(&live.after), requests, "{context}");
    binomial::assert_plausible("live: ratings-v2 before", v2(&live.before), requests, 0.1);
    binomial::assert_plausible(
        "live: ratings-v2 after",
        v2(&live.after),
        requests,
        demo::live::LIVE_PERCENT as f64 / 100.0,
    );
    assert_eq!(
        live.pids.0, live.pids.1,
        "the same Envoy process\n{context}"
    );
    assert_eq!(
        live.listener_modified.0, live.listener_modified.1,
        "no listener rebuilt\n{context}"
    );
    assert!(live.canary_reloads.1 > live.canary_reloads.0, "{context}");
    assert!(live.modules_fetched >= 1, "{context}");
    assert!(live.bootstrap_has_no_module_file, "{context}");
    eprintln!(
        "live step: the edit reached Envoy in {:?} (measured; the step's deadline is {:?})",
        live.change_to_reload,
        demo::live::LIVE_DEADLINE
    );
}
