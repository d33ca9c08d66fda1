//! The Istio match engine on arbitrary request bytes, against a fixed set of match blocks
//! that uses every kind of matcher (exact, prefix, regex, presence, ignoreUriCase, query
//! parameters, withoutHeaders, method, authority, port).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::matching::{HttpMatchRequest, MatchSet};

mod request;

const BLOCKS: &str = r#"[
  {"uri": {"prefix": "/api/"}, "headers": {"end-user": {"exact": "jason"}}},
  {"uri": {"regex": "/items/[0-9]+(/.*)?"}, "ignoreUriCase": true},
  {"uri": {"exact": "/Login"}, "ignoreUriCase": true, "method": {"exact": "POST"}},
  {"headers": {"x-canary": {}}, "withoutHeaders": {"x-block": {"prefix": ""}}},
  {"queryParams": {"debug": {"exact": "1"}, "v": {"regex": "[a-z]{1,8}"}}},
  {"authority": {"regex": ".*\\.example\\.com(:[0-9]+)?"}, "port": 8080},
  {"headers": {"cookie": {"regex": ".*session=[^;]+.*"}}}
]"#;

fn compile() -> Vec<MatchSet> {
    let blocks: Vec<HttpMatchRequest> =
        serde_json::from_str(BLOCKS).expect("the fixed blocks parse");
    let mut sets: Vec<MatchSet> = blocks
        .iter()
        .map(|b| MatchSet::compile(std::slice::from_ref(b)).expect("compiles"))
        .collect();
    sets.push(MatchSet::compile(&blocks).expect("compiles"));
    sets
}

thread_local! {
    // Per thread, not a shared static: a compiled regex keeps its match scratch space in a
    // RefCell (one per proxy-wasm VM, which is single-threaded), so it is not `Sync`.
    static SETS: Vec<MatchSet> = compile();
}

fuzz_target!(|data: &[u8]| {
    let host = request::request_from(data);
    SETS.with(|sets| {
        for set in sets {
            let _ = set.matches(&host);
        }
    });
});
