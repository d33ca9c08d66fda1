//! The breaker's plugin config (JSON) -> compile, and the breaker state codec (shared data is
//! written by every worker and by older module versions across a reload).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::breaker::{BreakerConfig, BreakerState, is_unavailable};
use sluice_core::json;

fuzz_target!(|data: &[u8]| {
    // The filter's hand-written reader and the serde derive agree on every input.
    assert_eq!(
        json::from_slice::<BreakerConfig>(data),
        json::serde_from_slice::<BreakerConfig>(data)
    );
    if let Ok(config) = BreakerConfig::from_json(data)
        && let Ok(compiled) = config.compile()
    {
        let _ = compiled.policy_for("outbound|9080|v1|reviews");
        if let Some(policy) = compiled.policy_for("anything") {
            for trips in [0, 1, 7, 64, u32::MAX] {
                let _ = policy.ejection_ms(trips);
            }
        }
    }
    if let Some(state) = BreakerState::decode(data) {
        assert_eq!(BreakerState::decode(&state.encode()), Some(state));
    }
    let _ = is_unavailable(Some(data), u64::from_le_bytes([0xff; 8]));
    let _ = is_unavailable(Some(data), 0);
});
