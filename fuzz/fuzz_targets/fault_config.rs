//! The fault filter's plugin config (JSON) and, when it compiles, a decision on a fuzzed
//! request (fault headers included) with a fixed PRNG sequence.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::fault::config::FaultConfig;
use sluice_core::fault::plan::FaultPlan;
use sluice_core::json;

mod request;

fuzz_target!(|data: &[u8]| {
    let (config, req) = request::split_config(data);
    // The filter's hand-written reader and the serde derive agree on every input.
    assert_eq!(
        json::from_slice::<FaultConfig>(config),
        json::serde_from_slice::<FaultConfig>(config)
    );
    if let Ok(plan) = FaultPlan::from_json(config) {
        let host = request::request_from(req);
        let mut state = 0x9e37_79b9_u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state
        };
        let _ = plan.decide(&host, || "127.0.0.1".parse().ok(), 0, &mut next);
        let _ = plan.decide(&host, || None, u32::MAX, &mut next);
    }
});
