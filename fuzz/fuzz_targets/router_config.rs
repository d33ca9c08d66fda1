//! The router's plugin config (JSON) and, when it compiles, a decision on a fuzzed request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::router::CompiledRouter;

mod request;

fuzz_target!(|data: &[u8]| {
    let (config, req) = request::split_config(data);
    if let Ok(router) = CompiledRouter::from_json(config) {
        let host = request::request_from(req);
        if let Some(decision) = router.decide(&host) {
            assert!(decision.rule_index < router.rules().len());
        }
    }
});
