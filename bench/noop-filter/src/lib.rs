//! A proxy-wasm HTTP filter that does nothing: `on_http_request_headers` returns `Continue`
//! without a single host call, and every other callback keeps the SDK's default (`Continue`).
//!
//! `cargo xtask bench` chains one, two and four of these in front of Envoy's router to measure
//! what Envoy 1.40's wasm host (V8, the proxy-wasm ABI, the Rust SDK's dispatch) costs per
//! filter and per request before any sluice logic runs: the floor under every sluice figure.
//! It is built with the workspace's release profile and `wasm-opt -Oz`, like the filters.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

/// The per-request context: no state, no host call.
struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}

/// The module's entry point (found by Envoy through the SDK's exported `_initialize`).
mod entry {
    use super::{HttpContext, LogLevel, Noop};

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Noop) });
    }}
}
