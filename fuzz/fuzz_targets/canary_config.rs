//! The canary's plugin config (JSON) and, when it compiles, its rule lookup on a fuzzed request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::canary::{CanaryConfig, CompiledCanary};
use sluice_core::json;

mod request;

fuzz_target!(|data: &[u8]| {
    let (config, req) = request::split_config(data);
    // The filter's hand-written reader and the serde derive agree on every input.
    assert_eq!(
        json::from_slice::<CanaryConfig>(config),
        json::serde_from_slice::<CanaryConfig>(config)
    );
    if let Ok(canary) = CompiledCanary::from_json(config) {
        let host = request::request_from(req);
        if let Some(split) = canary.rule_split(&host) {
            assert!(split < canary.splits.len());
        }
        let _ = canary.split_index(req);
    }
});
