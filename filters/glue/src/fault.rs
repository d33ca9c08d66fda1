//! The fault filter's counters and abort replies, shared by the fault filter and the suite.

use std::net::IpAddr;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, GrpcStatusCode, MetricType};
use sluice_core::fault::plan::{ABORT_BODY, DEBUG_HEADER};
use sluice_core::fault::{FaultPlan, Origin, Reply, is_grpc_content_type, net, stats};
use sluice_core::host::RequestView;

use crate::{HostRequest, count, define, source_address};

/// Metric ids of a fault plan (`None` where the host refused one).
#[derive(Default)]
pub struct FaultCounters {
    /// Delays injected per rule, indexed like [`FaultPlan::rules`].
    rule_delays: Vec<Option<u32>>,
    /// Aborts injected per rule, indexed like [`FaultPlan::rules`].
    rule_aborts: Vec<Option<u32>>,
    header_delays: Option<u32>,
    header_aborts: Option<u32>,
    /// Faults skipped because `maxActiveFaults` was reached.
    pub overflow: Option<u32>,
    /// Faults in progress (each worker adds its share).
    pub active_gauge: Option<u32>,
}

impl FaultCounters {
    /// Defines the plan's metrics; once per configuration, never on the request path.
    pub fn define(filter: &str, plan: &FaultPlan) -> Self {
        let counter = |name: &str| define(filter, MetricType::Counter, name);
        Self {
            rule_delays: plan
                .rules()
                .iter()
                .map(|r| counter(&stats::rule_delays_injected(&r.name)))
                .collect(),
            rule_aborts: plan
                .rules()
                .iter()
                .map(|r| counter(&stats::rule_aborts_injected(&r.name)))
                .collect(),
            header_delays: counter(stats::HEADER_DELAYS_INJECTED),
            header_aborts: counter(stats::HEADER_ABORTS_INJECTED),
            overflow: counter(stats::FAULTS_OVERFLOW),
            active_gauge: define(filter, MetricType::Gauge, stats::ACTIVE_FAULTS),
        }
    }

    /// The counter of delays from `origin`.
    pub fn delay_counter(&self, origin: Origin) -> Option<u32> {
        match origin {
            Origin::Rule(index) => self.rule_delays.get(index).copied().flatten(),
            Origin::Header => self.header_delays,
        }
    }

    /// The counter of aborts from `origin`.
    pub fn abort_counter(&self, origin: Origin) -> Option<u32> {
        match origin {
            Origin::Rule(index) => self.rule_aborts.get(index).copied().flatten(),
            Origin::Header => self.header_aborts,
        }
    }
}

/// An abort decided for a request: sent at once, or when the request's delay ends.
pub struct PendingAbort {
    /// The reply (HTTP status, or gRPC status for gRPC requests).
    pub reply: Reply,
    /// `x-sluice-fault` value, when the plan's debug header is on.
    pub debug: Option<String>,
    /// The counter of this abort's origin.
    pub counter: Option<u32>,
}

impl PendingAbort {
    /// Counts the abort and sends its reply on the current (or effective) stream.
    pub fn send(self) {
        count(self.counter);
        send_abort(self.reply, self.debug.as_deref());
    }
}

/// Sends a fault abort on the current (or effective) stream: `fault filter abort` with the
/// status, or for gRPC a trailers-only reply (HTTP 200, `grpc-status`, `grpc-message`).
fn send_abort(reply: Reply, debug: Option<&str>) {
    match reply {
        Reply::Http(status) => {
            let mut headers = vec![("content-type", "text/plain")];
            if let Some(value) = debug {
                headers.push((DEBUG_HEADER, value));
            }
            let _ = hostcalls::send_http_response(
                u32::from(status),
                headers,
                Some(ABORT_BODY.as_bytes()),
            );
        }
        Reply::Grpc(code) => {
            let metadata: Vec<(&str, &[u8])> = debug
                .map(|value| (DEBUG_HEADER, value.as_bytes()))
                .into_iter()
                .collect();
            let _ = hostcalls::send_grpc_response(grpc_code(code), Some(ABORT_BODY), metadata);
        }
    }
}

/// The SDK's enum for a gRPC status number; 2 and any number it has no name for are
/// `Unknown` (2).
fn grpc_code(code: u8) -> GrpcStatusCode {
    match code {
        0 => GrpcStatusCode::Ok,
        1 => GrpcStatusCode::Cancelled,
        3 => GrpcStatusCode::InvalidArgument,
        4 => GrpcStatusCode::DeadlineExceeded,
        5 => GrpcStatusCode::NotFound,
        6 => GrpcStatusCode::AlreadyExists,
        7 => GrpcStatusCode::PermissionDenied,
        8 => GrpcStatusCode::ResourceExhausted,
        9 => GrpcStatusCode::FailedPrecondition,
        10 => GrpcStatusCode::Aborted,
        11 => GrpcStatusCode::OutOfRange,
        12 => GrpcStatusCode::Unimplemented,
        13 => GrpcStatusCode::Internal,
        14 => GrpcStatusCode::Unavailable,
        15 => GrpcStatusCode::DataLoss,
        16 => GrpcStatusCode::Unauthenticated,
        _ => GrpcStatusCode::Unknown,
    }
}

/// Whether the current request is gRPC (read only when an abort fires).
pub fn is_grpc_request() -> bool {
    HostRequest
        .header("content-type")
        .is_some_and(|value| is_grpc_content_type(&value))
}

/// The downstream client's IP (Envoy's `source.address`), read only for fault headers.
pub fn client_ip() -> Option<IpAddr> {
    net::parse_socket_ip(&source_address()?)
}

/// What a request body or trailers callback answers while the stream's headers are held for a
/// delay: `Continue` there would release the paused headers early, so the stream stays paused
/// until the timer resumes it.
pub fn hold_while_delayed(delayed: bool) -> Action {
    if delayed {
        Action::Pause
    } else {
        Action::Continue
    }
}
