//! The canary's plugin config (JSON) and, when it compiles, its rule lookup on a fuzzed request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::canary::CompiledCanary;

mod request;

fuzz_target!(|data: &[u8]| {
    let (config, req) = request::split_config(data);
    if let Ok(canary) = CompiledCanary::from_json(config) {
        let host = request::request_from(req);
        if let Some(split) = canary.rule_split(&host) {
            assert!(split < canary.splits.len());
        }
        let _ = canary.split_index(req);
    }
});
