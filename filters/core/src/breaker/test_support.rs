//! Helpers shared by the breaker's unit tests: policies from JSON and whole requests.

use super::*;

pub(crate) fn policy(json: &str) -> Policy {
    let settings: BreakerSettings = serde_json::from_str(json).unwrap();
    Policy::compile(&settings, "test").unwrap()
}

pub(crate) fn consecutive(n: u32) -> Policy {
    policy(&format!(
        r#"{{"consecutiveErrors": {n}, "interval": "10s", "baseEjectionTime": "1s",
            "maxEjectionTime": "3s"}}"#
    ))
}

pub(crate) fn admit(state: &mut BreakerState, p: &Policy, now: u64) -> Decision {
    let (decision, next) = state.admit(p, now);
    if let Some(next) = next {
        *state = next;
    }
    decision
}

pub(crate) fn finish(
    state: &mut BreakerState,
    p: &Policy,
    d: Decision,
    v: Verdict,
    now: u64,
) -> Transition {
    let Decision::Admit(ticket) = d else {
        panic!("expected admission, got {d:?}")
    };
    let (t, next) = state.record(p, ticket, v, now);
    if let Some(next) = next {
        *state = next;
    }
    t
}

/// One full request: admit then record.
pub(crate) fn request(
    state: &mut BreakerState,
    p: &Policy,
    v: Verdict,
    now: u64,
) -> Result<Transition, Rejection> {
    match admit(state, p, now) {
        Decision::Reject(r) => Err(r),
        d => Ok(finish(state, p, d, v, now)),
    }
}
