//! Pure logic of the sluice filters, with no proxy-wasm dependency, so that it is tested
//! natively and shared with the builder (which emits exactly the configs the filters parse).
//!
//! - [`wire`]: the contract between the filters (internal header names, shared-data keys).
//! - [`duration`]: protobuf-style durations (`"5s"`, `"100ms"`), as Istio writes them.
//! - [`host`]: the narrow port through which the filters' logic sees a request, plus [`host::MockHost`].
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod breaker;
pub mod canary;
pub mod duration;
pub mod fault;
pub mod host;
pub mod json;
pub mod matching;
pub mod metrics;
pub mod regex;
pub mod router;
pub mod suite;
pub mod unique;
mod wide;
pub mod wire;
