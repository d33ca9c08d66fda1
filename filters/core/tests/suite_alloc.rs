//! The suite's per-request logic allocates nothing once configured (issue 25): a counting
//! global allocator watches the benchmark's request (`support/bench_request.rs`, the calls
//! `filters/suite` makes for it) from its request headers to its log. The host stand-ins'
//! allocations are counted apart: they stand for the proxy-wasm SDK's `Vec` per value the host
//! returns (two shared-data reads per request here), which is outside the logic. The only test
//! in this binary, so no other test thread allocates while it counts.

#[path = "support/bench_request.rs"]
mod bench_request;

use bench_request::{Counting, Harness, allocations};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn the_suites_request_path_does_not_allocate() {
    let mut harness = Harness::configure().unwrap();
    // The first request may size what lives for the worker (none does today).
    harness.request().unwrap();
    let calls_before = harness.calls();
    let (logic_before, host_before) = allocations();
    const REQUESTS: u64 = 1_000;
    for _ in 0..REQUESTS {
        harness.request().unwrap();
    }
    let (logic_after, host_after) = allocations();
    let calls = harness.calls();
    assert_eq!(
        logic_after - logic_before,
        0,
        "allocations by the suite's logic in {REQUESTS} requests"
    );
    // The stand-ins did run (and allocate as the SDK does): the requests really went through
    // the failover's and the log's breaker reads.
    let shared_gets = calls.shared_gets - calls_before.shared_gets;
    assert_eq!(shared_gets, 2 * REQUESTS);
    assert_eq!(host_after - host_before, shared_gets);
    // Both members were picked (the 90/10 split), and every increment was batched.
    assert!(
        harness.routed.iter().all(|&n| n > 0),
        "{:?}",
        harness.routed
    );
    assert_eq!(calls.metric_calls, 0);
    assert_eq!(harness.flush(), 3 * (REQUESTS + 1));
}
