//! Outcome classification: which finished request counts as a failure of the upstream, from
//! Envoy's `response.code` and `response.flags`.

use super::config::{Outcome, OutcomeSet};

/// What an outcome means to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The upstream answered well.
    Success,
    /// An error of a counted kind.
    Failure,
    /// Says nothing about the upstream (client went away, no route, ...).
    Ignored,
}

/// Envoy's legacy response-flag bits, as the `response.flags` property reports them
/// (`StreamInfo::legacyResponseFlags()`).
pub mod response_flags {
    /// `UH`: no healthy upstream host.
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    /// `UT`: upstream request timeout.
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    /// `LR`: Envoy reset the stream locally.
    pub const LOCAL_RESET: u64 = 0x8;
    /// `UR`: the upstream reset the stream.
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    /// `UF`: connecting to the upstream failed.
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    /// `UC`: the upstream connection closed mid-stream.
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    /// `UO`: Envoy's own circuit breaker or pool overflowed.
    pub const UPSTREAM_OVERFLOW: u64 = 0x80;
    /// `NR`: no route.
    pub const NO_ROUTE_FOUND: u64 = 0x100;
    /// `FI`: fault filter abort.
    pub const FAULT_INJECTED: u64 = 0x400;
    /// `RL`: rate limited.
    pub const RATE_LIMITED: u64 = 0x800;
    /// `UAEX`: external authorization denied.
    pub const UNAUTHORIZED_EXTERNAL_SERVICE: u64 = 0x1000;
    /// `DC`: the downstream connection terminated.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: u64 = 0x4000;
    /// `UMSDR`: upstream max stream duration reached.
    pub const UPSTREAM_MAX_STREAM_DURATION_REACHED: u64 = 0x8_0000;
    /// `UPE`: upstream protocol error.
    pub const UPSTREAM_PROTOCOL_ERROR: u64 = 0x80_0000;
    /// `NC`: no cluster found.
    pub const NO_CLUSTER_FOUND: u64 = 0x100_0000;
    /// `OM`: overload manager.
    pub const OVERLOAD_MANAGER: u64 = 0x200_0000;
    /// `DR`: the downstream reset the stream.
    pub const DOWNSTREAM_REMOTE_RESET: u64 = 0x1000_0000;
}

/// Flags saying the request did not fail because of the upstream: Envoy or the client decided.
pub const NOT_THE_UPSTREAMS_FAULT: u64 = response_flags::NO_ROUTE_FOUND
    | response_flags::NO_CLUSTER_FOUND
    | response_flags::FAULT_INJECTED
    | response_flags::RATE_LIMITED
    | response_flags::UNAUTHORIZED_EXTERNAL_SERVICE
    | response_flags::UPSTREAM_OVERFLOW
    | response_flags::OVERLOAD_MANAGER
    | response_flags::DOWNSTREAM_CONNECTION_TERMINATION
    | response_flags::DOWNSTREAM_REMOTE_RESET;

/// The kinds of [`Outcome`] a finished request shows.
pub fn observed(code: Option<u32>, flags: u64) -> OutcomeSet {
    use response_flags as f;
    let mut seen = OutcomeSet::default();
    if let Some(code) = code {
        if (500..600).contains(&code) {
            seen.insert(Outcome::Status5xx);
        }
        if matches!(code, 502..=504) {
            seen.insert(Outcome::GatewayError);
        }
    }
    if flags & f::UPSTREAM_CONNECTION_FAILURE != 0 {
        seen.insert(Outcome::ConnectFailure);
    }
    if flags
        & (f::UPSTREAM_REMOTE_RESET
            | f::UPSTREAM_CONNECTION_TERMINATION
            | f::UPSTREAM_PROTOCOL_ERROR)
        != 0
    {
        seen.insert(Outcome::Reset);
    }
    if flags & (f::UPSTREAM_REQUEST_TIMEOUT | f::UPSTREAM_MAX_STREAM_DURATION_REACHED) != 0 {
        seen.insert(Outcome::Timeout);
    }
    seen
}

/// Classifies a finished request from Envoy's `response.code` (None or 0 when no response was
/// sent) and `response.flags`.
///
/// Requests that Envoy or the client ended (no route, fault abort, client disconnect, Envoy's
/// own overflow) are [`Verdict::Ignored`]: they say nothing about the upstream. A response
/// with no code and no upstream error flag is ignored too. The breaker's own rejections are
/// never classified: the filter records only requests it admitted.
pub fn classify(code: Option<u32>, flags: u64, count_as: OutcomeSet) -> Verdict {
    classify_with_code(flags, || code, count_as)
}

/// [`classify`] with the response code asked for only when the flags leave the verdict open:
/// a flag saying Envoy or the client ended the request makes it [`Verdict::Ignored`] whatever
/// the code, which saves the caller the `response.code` host call. `code` is called at most
/// once.
pub fn classify_with_code(
    flags: u64,
    code: impl FnOnce() -> Option<u32>,
    count_as: OutcomeSet,
) -> Verdict {
    if flags & NOT_THE_UPSTREAMS_FAULT != 0 {
        return Verdict::Ignored;
    }
    let code = code().filter(|&c| c != 0);
    if observed(code, flags).intersects(count_as) {
        return Verdict::Failure;
    }
    if code.is_none() {
        return Verdict::Ignored;
    }
    Verdict::Success
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::test_support::*;
    use std::cell::Cell;

    #[test]
    fn classify_with_code_reads_the_code_only_when_the_flags_leave_it_open() {
        use response_flags as f;
        let all_flags = [
            0,
            f::UPSTREAM_CONNECTION_FAILURE,
            f::UPSTREAM_REMOTE_RESET,
            f::UPSTREAM_REQUEST_TIMEOUT,
            f::DOWNSTREAM_CONNECTION_TERMINATION,
            f::DOWNSTREAM_REMOTE_RESET,
            f::FAULT_INJECTED,
            f::UPSTREAM_OVERFLOW,
            f::NO_ROUTE_FOUND,
            f::DOWNSTREAM_CONNECTION_TERMINATION | f::UPSTREAM_CONNECTION_FAILURE,
        ];
        let policies = [
            consecutive(2),
            policy(
                r#"{"consecutiveErrors": 2, "countAs": ["gateway-error", "reset", "connect-failure"]}"#,
            ),
        ];
        for p in &policies {
            for flags in all_flags {
                for code in [None, Some(0), Some(200), Some(404), Some(500), Some(503)] {
                    let reads = Cell::new(0);
                    let verdict = classify_with_code(
                        flags,
                        || {
                            reads.set(reads.get() + 1);
                            code
                        },
                        p.count_as,
                    );
                    assert_eq!(
                        verdict,
                        classify(code, flags, p.count_as),
                        "{flags:#x} {code:?}"
                    );
                    let decided_by_flags = flags & NOT_THE_UPSTREAMS_FAULT != 0;
                    assert_eq!(reads.get(), usize::from(!decided_by_flags), "{flags:#x}");
                }
            }
        }
    }

    #[test]
    fn classification_follows_envoy_flags() {
        use response_flags as f;
        let all: OutcomeSet = [Outcome::Status5xx].into_iter().collect();
        let gw: OutcomeSet = [Outcome::GatewayError].into_iter().collect();
        let connect: OutcomeSet = [Outcome::ConnectFailure].into_iter().collect();
        let timeout: OutcomeSet = [Outcome::Timeout].into_iter().collect();
        let reset: OutcomeSet = [Outcome::Reset].into_iter().collect();
        assert_eq!(classify(Some(200), 0, all), Verdict::Success);
        assert_eq!(classify(Some(404), 0, all), Verdict::Success);
        assert_eq!(classify(Some(500), 0, all), Verdict::Failure);
        assert_eq!(classify(Some(500), 0, gw), Verdict::Success);
        assert_eq!(classify(Some(503), 0, gw), Verdict::Failure);
        assert_eq!(
            classify(Some(503), f::UPSTREAM_CONNECTION_FAILURE, connect),
            Verdict::Failure
        );
        assert_eq!(classify(Some(503), 0, connect), Verdict::Success);
        assert_eq!(
            classify(Some(504), f::UPSTREAM_REQUEST_TIMEOUT, timeout),
            Verdict::Failure
        );
        assert_eq!(
            classify(Some(503), f::UPSTREAM_REMOTE_RESET, reset),
            Verdict::Failure
        );
        assert_eq!(
            classify(Some(503), f::UPSTREAM_CONNECTION_TERMINATION, reset),
            Verdict::Failure
        );
        // Not the upstream's fault, even with a 5xx code.
        assert_eq!(
            classify(Some(503), f::FAULT_INJECTED, all),
            Verdict::Ignored
        );
        assert_eq!(
            classify(Some(404), f::NO_ROUTE_FOUND, all),
            Verdict::Ignored
        );
        assert_eq!(
            classify(Some(503), f::UPSTREAM_OVERFLOW, all),
            Verdict::Ignored
        );
        assert_eq!(
            classify(Some(0), f::DOWNSTREAM_CONNECTION_TERMINATION, all),
            Verdict::Ignored
        );
        assert_eq!(classify(None, 0, all), Verdict::Ignored);
        assert_eq!(classify(Some(0), 0, all), Verdict::Ignored);
    }
}
