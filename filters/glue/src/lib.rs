//! Host glue shared by the sluice proxy-wasm filters (router, canary, fault, breaker, suite).
//!
//! Each filter's `lib.rs` is thin glue around `sluice-core`; what that glue has in common lives
//! here once: the request and shared-data ports of `sluice-core` over proxy-wasm host calls,
//! the clock, integer properties, metrics and logging. Every function goes through
//! `proxy_wasm::hostcalls`, whose errors are values: a failed call degrades (a header treated
//! as absent, a counter not bumped, the clock read as 0) and never traps the VM. `filter` is
//! the log prefix (`sluice-router`, ...), so operators see which filter spoke.
//!
//! Beyond the ports, the replies and bookkeeping two or more filters share (the suite runs all
//! four filters' logic, so each of these has two callers):
//!
//! - [`router`]: the 404 of an unmatched request, writing the internal headers;
//! - [`canary`]: a split's run-time state (counters, schedule), the point a request takes, the
//!   member chosen with failover, the 503 when none is left;
//! - [`fault`]: fault counters, the abort reply (HTTP or gRPC);
//! - [`breaker`]: one guarded cluster (key, reply headers, metrics), admission and outcome;
//! - [`root_context!`]: the module's entry point.
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
pub mod fault;
pub mod router;

use std::cell::Cell;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};
use sluice_core::breaker::{SharedStore, StoreError};
use sluice_core::host::RequestView;
use sluice_core::wire;

/// The proxy-wasm SDK, for [`root_context!`]'s expansion.
#[doc(hidden)]
pub use proxy_wasm;

/// Declares the module's entry point (`_initialize`): log level `Info` and one `$root` (built
/// with `Default::default()`) per plugin instance. Private: Envoy finds the SDK's export through
/// its `#[no_mangle]` symbol, not through Rust visibility.
#[macro_export]
macro_rules! root_context {
    ($root:ident) => {
        #[allow(missing_docs)] // the SDK macro's exported function cannot carry a doc comment
        mod entry {
            use $crate::proxy_wasm;

            proxy_wasm::main! {{
                proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
                proxy_wasm::set_root_context(
                    |_| -> Box<dyn proxy_wasm::traits::RootContext> {
                        Box::new(<super::$root as Default>::default())
                    },
                );
            }}
        }
    };
}

/// The current request, read lazily from the host: only the headers some rule looks at.
pub struct HostRequest;

impl RequestView for HostRequest {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        request_header(name)
    }

    /// All request headers are read (one host call), then filtered: the ABI has no call for
    /// the lines of one header.
    fn header_lines(&self, name: &str) -> Vec<Vec<u8>> {
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
            .map(|pairs| {
                pairs
                    .into_iter()
                    .filter(|(key, _)| key == name)
                    .map(|(_, value)| value)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Envoy's `destination.port` property: the local port, as an 8-byte little-endian integer.
    fn local_port(&self) -> Option<u32> {
        let bytes = property(path::DESTINATION_PORT)?;
        let le: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        u32::try_from(u64::from_le_bytes(le)).ok()
    }
}

/// A request header's value as bytes (`None` when absent or the host refuses).
pub fn request_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

/// Envoy's `source.address` property: the downstream remote address the HTTP connection
/// manager resolved (the TCP peer under the generated `use_remote_address: true`, or the
/// `xff_num_trusted_hops`-th `x-forwarded-for` entry from the right), as text, `ip:port`.
pub fn source_address() -> Option<Vec<u8>> {
    property(path::SOURCE_ADDRESS)
}

/// An integer property (`response.code`, `response.flags`): Envoy encodes them as 8 bytes,
/// little endian.
pub fn property_u64(path: &[u8]) -> Option<u64> {
    let bytes = property(path)?;
    let array: [u8; 8] = bytes.as_slice().try_into().ok()?;
    Some(u64::from_le_bytes(array))
}

/// The property paths the filters read, in the ABI's form: the segments joined by NUL bytes
/// (what the SDK's `get_property(vec!["response", "code"])` serialises on every call).
pub mod path {
    /// `response.code`.
    pub const RESPONSE_CODE: &[u8] = b"response\0code";
    /// `response.flags`.
    pub const RESPONSE_FLAGS: &[u8] = b"response\0flags";
    /// `response.grpc_status`.
    pub const RESPONSE_GRPC_STATUS: &[u8] = b"response\0grpc_status";
    /// `response.code_details`.
    pub const RESPONSE_CODE_DETAILS: &[u8] = b"response\0code_details";
    /// `destination.port`.
    pub const DESTINATION_PORT: &[u8] = b"destination\0port";
    /// `source.address`.
    pub const SOURCE_ADDRESS: &[u8] = b"source\0address";
    /// `xds.cluster_name`.
    pub const XDS_CLUSTER_NAME: &[u8] = b"xds\0cluster_name";
}

/// A property's value (`None` when absent or the host refuses), `path` in the ABI's form
/// ([`path`]). The SDK's `hostcalls::get_property` takes the path as a `Vec<&str>` and
/// serialises it into another `Vec` on every call: two allocations (and their frees) per
/// read that a constant path does not need, on the suite's per-request path (`on_log` reads
/// `response.flags` and `response.code`). The value itself is still the host's allocation,
/// through the SDK's `proxy_on_memory_allocate`, as for every value the host returns.
pub fn property(path: &[u8]) -> Option<Vec<u8>> {
    abi::get_property(path)
}

/// The one proxy-wasm import called without the SDK's wrapper ([`property`]).
#[allow(unsafe_code)] // an FFI call and taking back the host's buffer; both as the SDK does
mod abi {
    use std::ptr::null_mut;

    use proxy_wasm::types::Status;

    // The same import, with the same signature, as the SDK's `hostcalls` declares.
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> Status;
    }

    /// `proxy_get_property`, with the SDK's `get_property`'s handling of the answer, except
    /// that every status other than `Ok` reads as absent (the SDK panics on unknown ones).
    pub(super) fn get_property(path: &[u8]) -> Option<Vec<u8>> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: the host reads `path.len()` bytes from `path` and writes the two out
        // parameters, which live across the call.
        let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
        if status != Status::Ok || data.is_null() {
            return None;
        }
        // SAFETY: on `Ok` with a value, the host allocated `size` bytes at `data` through the
        // module's `proxy_on_memory_allocate` (the SDK's: a leaked boxed slice of exactly
        // `size` bytes from the global allocator) and hands them over; the SDK's
        // `get_property` takes them back the same way.
        Some(unsafe { Vec::from_raw_parts(data, size, size) })
    }
}

/// Proxy-wasm shared data, scoped by the plugin's `vm_id`: breaker states, schedule records.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(|status| match status {
            Status::CasMismatch => StoreError::CasMismatch,
            _ => StoreError::Other,
        })
    }
}

/// Host clock in nanoseconds since the Unix epoch (0 if the host refuses, which Envoy never
/// does).
pub fn now_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// Host clock in milliseconds since the Unix epoch (0 if it is unavailable).
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The host clock (ms) read at most once, and only when asked: the decisions of one callback
/// share one reading, and a decision that needs no time (a closed breaker's admission, a
/// success on a clean breaker) makes no host call for it.
#[derive(Debug, Default)]
pub struct LazyClock(Cell<Option<u64>>);

impl LazyClock {
    /// The time in ms, from the host on the first call ([`now_ms`]), the same value after.
    pub fn now_ms(&self) -> u64 {
        match self.0.get() {
            Some(now) => now,
            None => {
                let now = now_ms();
                self.0.set(Some(now));
                now
            }
        }
    }
}

/// A PRNG seed from WASI `random_get` (Envoy's V8 provides it); the clock if that fails (logged),
/// which still gives each worker a different stream.
pub fn random_seed(filter: &str) -> u64 {
    getrandom::u64().unwrap_or_else(|error| {
        log(
            LogLevel::Warn,
            &format!("{filter}: random_get failed ({error}); seeding from the clock"),
        );
        now_nanos() | 1
    })
}

/// The plugin configuration (empty when there is none), or `None` after logging why the host
/// would not give it: `on_configure` then refuses the configuration.
pub fn plugin_config(filter: &str, size: usize) -> Option<Vec<u8>> {
    match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
        Ok(json) => Some(json.unwrap_or_default()),
        Err(status) => {
            log(
                LogLevel::Error,
                &format!("{filter}: cannot read the plugin configuration: {status:?}"),
            );
            None
        }
    }
}

/// The plugin configuration parsed by `parse`, or `None` after logging why not (the host's
/// refusal, or `{filter}: {reason}`): `on_configure` then refuses the configuration.
pub fn parse_config<T, E: std::fmt::Display>(
    filter: &str,
    size: usize,
    parse: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Option<T> {
    match parse(&plugin_config(filter, size)?) {
        Ok(config) => Some(config),
        Err(reason) => {
            log(LogLevel::Error, &format!("{filter}: {reason}"));
            None
        }
    }
}

/// Defines a metric; `None` (logged) if the host refuses, and the filter then skips it.
pub fn define(filter: &str, kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log(
                LogLevel::Warn,
                &format!("{filter}: cannot define metric {name}: {status:?}"),
            );
            None
        }
    }
}

/// Where a per-request counter increment goes: straight to the host ([`Immediate`], the four
/// filters), or into the suite's per-worker batch, published on its tick.
pub trait Counts {
    /// Adds 1 to counter `id`.
    fn add_one(&self, id: u32);
}

/// One `increment_metric` per increment, visible in Envoy's stats at once.
pub struct Immediate;

impl Counts for Immediate {
    fn add_one(&self, id: u32) {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

/// Adds 1 to a counter, if it was defined.
pub fn count(counter: Option<u32>) {
    count_by(counter, 1);
}

/// Adds `offset` to a counter or gauge, if it was defined.
pub fn count_by(metric: Option<u32>, offset: i64) {
    if let Some(id) = metric {
        let _ = hostcalls::increment_metric(id, offset);
    }
}

thread_local! {
    /// The `regex_budget_exceeded` counter (defined at its first use), the time of the last
    /// budget log line and the cut-short matches since (one VM per module: per filter).
    static REGEX_BUDGET: Cell<(Option<u32>, u64, u32)> = const { Cell::new((None, 0, 0)) };
}

/// Minimum time between two "regex step budget exceeded" log lines of one worker.
const REGEX_BUDGET_LOG_EVERY_MS: u64 = 10_000;

/// Call after a request's matching: counts the regex matches the per-request step budget cut
/// short ([`sluice_core::regex`]: they answered no match) in
/// `sluice.<filter>.regex_budget_exceeded` (`filter` without its `sluice-` prefix) and logs
/// them at warn level, at most once per 10 s per worker. Costs one thread-local read when
/// nothing was cut short.
pub fn report_regex_budget(filter: &str) {
    let exceeded = sluice_core::regex::take_budget_exceeded();
    if exceeded == 0 {
        return;
    }
    let (mut counter, last_log_ms, unlogged) = REGEX_BUDGET.with(Cell::get);
    if counter.is_none() {
        let short = filter
            .strip_prefix(wire::FILTER_NAME_PREFIX)
            .unwrap_or(filter);
        counter = define(
            filter,
            MetricType::Counter,
            &format!(
                "{}{short}{}",
                wire::METRIC_PREFIX,
                wire::REGEX_BUDGET_EXCEEDED_SUFFIX
            ),
        );
    }
    count_by(counter, i64::from(exceeded));
    let unlogged = unlogged.saturating_add(exceeded);
    let now = now_ms();
    if last_log_ms == 0 || now.saturating_sub(last_log_ms) >= REGEX_BUDGET_LOG_EVERY_MS {
        log(
            LogLevel::Warn,
            &format!(
                "{filter}: {unlogged} regex match(es) exceeded the per-request budget of {} \
                 steps and answered no match (logged at most every 10 s)",
                sluice_core::regex::REQUEST_STEP_BUDGET
            ),
        );
        REGEX_BUDGET.with(|c| c.set((counter, now, 0)));
    } else {
        REGEX_BUDGET.with(|c| c.set((counter, last_log_ms, unlogged)));
    }
}

/// Logs at `level` (a refused log line is dropped).
pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
