//! The router's plugin config (JSON) and, when it compiles, a decision on a fuzzed request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::json;
use sluice_core::router::{CompiledRouter, RouterConfig};
use sluice_core::suite::SuiteConfig;

mod request;

fuzz_target!(|data: &[u8]| {
    let (config, req) = request::split_config(data);
    // The filters' hand-written readers and the serde derives agree on every input: the same
    // value or the same error (message, line, column). The suite config nests all four.
    assert_eq!(
        json::from_slice::<RouterConfig>(config),
        json::serde_from_slice::<RouterConfig>(config)
    );
    assert_eq!(
        json::from_slice::<SuiteConfig>(config),
        json::serde_from_slice::<SuiteConfig>(config)
    );
    if let Ok(router) = CompiledRouter::from_json(config) {
        let host = request::request_from(req);
        if let Some(decision) = router.decide(&host) {
            assert!(decision.rule_index < router.rules().len());
        }
    }
});
