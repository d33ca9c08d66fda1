//! sluice breaker filter (proxy-wasm glue). Pure logic lives in `sluice-core`.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
