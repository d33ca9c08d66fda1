//! The state machine of one cluster's breaker: closed -> open -> half-open -> closed, the
//! admission of a request and the recording of its outcome.

use super::classify::Verdict;
use super::config::Policy;

/// The phase of a breaker. The numbers are the `state` gauge's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Traffic flows; errors are counted.
    #[default]
    Closed = 0,
    /// Traffic is rejected until `open_until_ms`.
    Open = 1,
    /// A few probes go through; their outcome decides.
    HalfOpen = 2,
}

impl Phase {
    pub(super) fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Closed),
            1 => Some(Self::Open),
            2 => Some(Self::HalfOpen),
            _ => None,
        }
    }
}

/// The state of one cluster's breaker, shared by all workers. Times are ms since the Unix epoch
/// (proxy-wasm's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BreakerState {
    /// Current phase as stored; see [`BreakerState::effective_phase`].
    pub phase: Phase,
    /// Trips not yet forgotten; drives the ejection back-off.
    pub trips: u32,
    /// Incremented on every trip, so a late probe outcome from an earlier half-open episode
    /// cannot decide the current one.
    pub generation: u32,
    /// Errors since the last success.
    pub consecutive_errors: u32,
    /// Start of the error-ratio window.
    pub window_start_ms: u64,
    /// Requests recorded in the window.
    pub window_requests: u32,
    /// Errors recorded in the window.
    pub window_errors: u32,
    /// End of the current ejection (meaningful while open).
    pub open_until_ms: u64,
    /// When the breaker last closed after a trip (for the trip decay); 0 if never.
    pub closed_since_ms: u64,
    /// Half-open probes admitted and not finished.
    pub probes_in_flight: u32,
    /// Admitted requests that hold an in-flight slot (only counted with a concurrency limit).
    pub in_flight: u32,
    /// The breaker's `halfOpenProbes`, written with each probe admitted, so that other filters
    /// (the canary) can tell a half-open breaker with every probe slot taken.
    pub probe_slots: u32,
    /// Deadline of the oldest probe still in flight (its admission plus `probeTimeout`); 0 when
    /// no probe is in flight. Past it, the next admission counts the probe as failed.
    pub probe_deadline_ms: u64,
}

impl BreakerState {
    /// The phase as seen at `now`: an open breaker whose ejection time is over is half-open
    /// (the stored phase moves on at the next admission).
    pub fn effective_phase(&self, now_ms: u64) -> Phase {
        match self.phase {
            Phase::Open if now_ms >= self.open_until_ms => Phase::HalfOpen,
            phase => phase,
        }
    }

    /// Whether the breaker rejects all traffic at `now`: open, ejection not over.
    pub fn is_open(&self, now_ms: u64) -> bool {
        self.effective_phase(now_ms) == Phase::Open
    }

    /// [`is_open`](Self::is_open) with the clock read only for a stored open phase (the one
    /// phase whose meaning depends on the time); `now_ms` is called at most once.
    pub fn is_open_with_clock(&self, now_ms: impl FnOnce() -> u64) -> bool {
        self.phase == Phase::Open && now_ms() < self.open_until_ms
    }

    /// Whether the breaker takes no new request at `now`: open with the ejection not over, or
    /// half-open with every probe slot taken by a probe still within its `probeTimeout`. (A
    /// probe past its deadline is reclaimed by the next admission, which reopens the breaker;
    /// such a breaker counts as available so that a request reaches the breaker to do it.)
    /// The clock is read only for those two stored states; `now_ms` is called at most once.
    pub fn is_unavailable_with_clock(&self, now_ms: impl FnOnce() -> u64) -> bool {
        match self.phase {
            Phase::Open => now_ms() < self.open_until_ms,
            Phase::HalfOpen => {
                self.probe_slots > 0
                    && self.probes_in_flight >= self.probe_slots
                    && now_ms() < self.probe_deadline_ms
            }
            Phase::Closed => false,
        }
    }
}

/// Why a request was rejected; the text after the cluster in `x-sluice-breaker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Open, or half-open with every probe slot taken.
    Open,
    /// Half-open, and a probe was past its `probeTimeout`: counted as a failed probe, so this
    /// admission opened the breaker again (a trip, for the caller's counters and log).
    ProbeOverrun {
        /// How long the breaker stays open.
        ejection_ms: u64,
    },
    /// The in-flight limit is reached.
    Overflow,
}

impl Rejection {
    /// `"open"` or `"overflow"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open | Self::ProbeOverrun { .. } => "open",
            Self::Overflow => "overflow",
        }
    }
}

/// What an admitted request carries until its outcome is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Admitted as a half-open probe.
    pub probe: bool,
    /// Took an in-flight slot that must be given back.
    pub holds_slot: bool,
    /// The state's generation at admission.
    pub generation: u32,
}

impl Ticket {
    /// Whether recording `verdict` with this ticket can change any breaker state. An ignored
    /// outcome (client gone, fault abort, Envoy's own overflow, no response) of a request that
    /// holds no in-flight slot and is no probe changes nothing in any state, so the caller may
    /// skip reading the shared state at all.
    pub fn records_anything(self, verdict: Verdict) -> bool {
        verdict != Verdict::Ignored || self.probe || self.holds_slot
    }
}

/// The admission decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward the request; record its outcome with the ticket.
    Admit(Ticket),
    /// Answer 503 at once.
    Reject(Rejection),
}

/// A phase change caused by a recorded outcome, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed phase.
    None,
    /// Closed or half-open -> open, for `ejection_ms`.
    Tripped {
        /// How long the breaker stays open.
        ejection_ms: u64,
    },
    /// Half-open -> closed.
    Closed,
    /// A closed breaker reached its threshold, but opening it would exceed its host's
    /// `maxEjectionPercent`: it stays closed, its error counts start again.
    TripSkipped,
}

impl BreakerState {
    /// Decides on a new request at `now`. Returns the decision and the new state if it changed
    /// (open -> half-open, a probe or in-flight slot taken).
    pub fn admit(&self, policy: &Policy, now_ms: u64) -> (Decision, Option<Self>) {
        self.admit_with_clock(policy, || now_ms)
    }

    /// [`admit`](Self::admit) with the clock read only when the decision depends on it: an
    /// open breaker whose ejection may be over, a half-open one with a probe in flight (whose
    /// deadline may be over), a probe admitted (its deadline is stamped). A closed breaker
    /// decides without a time, which saves the caller a host call per request on a healthy
    /// breaker. `now_ms` is called at most once.
    ///
    /// Half-open with a probe past its `probeTimeout`: the probe counts as failed, the breaker
    /// opens again for the next ejection ([`Rejection::ProbeOverrun`]), every probe slot is
    /// free for the next episode, and the late probe's own outcome, whenever it comes, belongs
    /// to an earlier episode and decides nothing.
    pub fn admit_with_clock(
        &self,
        policy: &Policy,
        now_ms: impl FnOnce() -> u64,
    ) -> (Decision, Option<Self>) {
        // The healthy case, decided before the general path's copy and comparison of the
        // state: a closed breaker without a concurrency limit admits, and nothing changes.
        if self.phase == Phase::Closed && policy.max_concurrent_requests.is_none() {
            let ticket = Ticket {
                probe: false,
                holds_slot: false,
                generation: self.generation,
            };
            return (Decision::Admit(ticket), None);
        }
        self.admit_general(policy, now_ms)
    }

    /// [`admit_with_clock`](Self::admit_with_clock) without its healthy-case shortcut (every
    /// case, the shortcut's included: a test shows they agree).
    fn admit_general(
        &self,
        policy: &Policy,
        now_ms: impl FnOnce() -> u64,
    ) -> (Decision, Option<Self>) {
        let mut clock_fn = Some(now_ms);
        let mut cached = None;
        let mut now = || *cached.get_or_insert_with(|| clock_fn.take().map_or(0, |f| f()));
        let mut next = *self;
        if next.phase == Phase::Open && now() >= next.open_until_ms {
            next.phase = Phase::HalfOpen;
            next.probes_in_flight = 0;
            next.probe_deadline_ms = 0;
        }
        let changed = |next: Self| (next != *self).then_some(next);
        if next.phase == Phase::HalfOpen
            && next.probes_in_flight > 0
            && now() >= next.probe_deadline_ms
        {
            let ejection_ms = next.trip(policy, now());
            return (
                Decision::Reject(Rejection::ProbeOverrun { ejection_ms }),
                changed(next),
            );
        }
        match next.phase {
            Phase::Open => return (Decision::Reject(Rejection::Open), changed(next)),
            Phase::HalfOpen if next.probes_in_flight >= policy.half_open_probes => {
                return (Decision::Reject(Rejection::Open), changed(next));
            }
            Phase::HalfOpen | Phase::Closed => {}
        }
        let mut holds_slot = false;
        if let Some(limit) = policy.max_concurrent_requests {
            if next.in_flight >= limit {
                return (Decision::Reject(Rejection::Overflow), changed(next));
            }
            next.in_flight = next.in_flight.saturating_add(1);
            holds_slot = true;
        }
        let probe = next.phase == Phase::HalfOpen;
        if probe {
            if next.probes_in_flight == 0 {
                next.probe_deadline_ms = now().saturating_add(policy.probe_timeout_ms);
            }
            next.probes_in_flight = next.probes_in_flight.saturating_add(1);
            next.probe_slots = policy.half_open_probes;
        }
        let ticket = Ticket {
            probe,
            holds_slot,
            generation: next.generation,
        };
        (Decision::Admit(ticket), changed(next))
    }

    /// Records the outcome of a request admitted with `ticket`. Returns the phase change and the
    /// new state if it changed.
    pub fn record(
        &self,
        policy: &Policy,
        ticket: Ticket,
        verdict: Verdict,
        now_ms: u64,
    ) -> (Transition, Option<Self>) {
        self.record_with_clock(policy, ticket, verdict, || now_ms)
    }

    /// [`record`](Self::record) with the clock read only when the outcome uses it: a ratio
    /// window to roll, a trip, or a half-open episode closing. Any other outcome (the common
    /// success on a closed consecutive-errors breaker, an ignored one, an error below the
    /// threshold) never calls `now_ms`, which saves the caller a host call per healthy request.
    /// `now_ms` is called at most once.
    pub fn record_with_clock(
        &self,
        policy: &Policy,
        ticket: Ticket,
        verdict: Verdict,
        now_ms: impl FnMut() -> u64,
    ) -> (Transition, Option<Self>) {
        self.record_capped(policy, ticket, verdict, now_ms, || true)
    }

    /// [`record_with_clock`](Self::record_with_clock) under the host's `maxEjectionPercent`:
    /// when a closed breaker reaches its threshold and its policy has a cap (under 100),
    /// `may_trip` is asked whether it may open (the caller reads the host's other breakers and
    /// answers with [`ejection_allowed`]); if not, the breaker stays closed, its consecutive
    /// errors and window start again, and the transition is [`Transition::TripSkipped`].
    /// `may_trip` is called only then (never on a success, an error below the threshold, a
    /// half-open probe failing: that breaker is already counted as not closed), at most once.
    pub fn record_capped(
        &self,
        policy: &Policy,
        ticket: Ticket,
        verdict: Verdict,
        now_ms: impl FnMut() -> u64,
        may_trip: impl FnOnce() -> bool,
    ) -> (Transition, Option<Self>) {
        // The healthy case, decided before the general path's copy and comparison of the
        // state: a success that has no error count to reset and no window to count in, on a
        // request that holds no slot and is no probe, changes nothing (as the general path
        // would find).
        let nothing_to_reset = self.consecutive_errors == 0 || policy.consecutive_errors.is_none();
        if verdict == Verdict::Success
            && nothing_to_reset
            && !policy.tracks_window()
            && !ticket.holds_slot
            && !ticket.probe
        {
            return (Transition::None, None);
        }
        self.record_general(policy, ticket, verdict, now_ms, may_trip)
    }

    /// [`record_capped`](Self::record_capped) without its healthy-case shortcut (every case,
    /// the shortcut's included: a test shows they agree).
    fn record_general(
        &self,
        policy: &Policy,
        ticket: Ticket,
        verdict: Verdict,
        mut now_ms: impl FnMut() -> u64,
        may_trip: impl FnOnce() -> bool,
    ) -> (Transition, Option<Self>) {
        let mut clock = None;
        let mut now_ms = || *clock.get_or_insert_with(&mut now_ms);
        let mut next = *self;
        if ticket.holds_slot {
            next.in_flight = next.in_flight.saturating_sub(1);
        }
        // Only a probe of the current half-open episode decides it; results of requests
        // admitted before a trip are counted but never reopen or close anything.
        let decides =
            ticket.probe && next.phase == Phase::HalfOpen && next.generation == ticket.generation;
        let mut transition = Transition::None;
        match verdict {
            Verdict::Ignored => {
                if decides {
                    next.probes_in_flight = next.probes_in_flight.saturating_sub(1);
                    // The deadline is the oldest probe's; it is kept (conservatively) while
                    // other probes are in flight, and cleared with the last.
                    if next.probes_in_flight == 0 {
                        next.probe_deadline_ms = 0;
                    }
                }
            }
            Verdict::Success => {
                if policy.consecutive_errors.is_some() {
                    next.consecutive_errors = 0;
                }
                if policy.tracks_window() {
                    next.roll_window(policy, now_ms());
                    next.window_requests = next.window_requests.saturating_add(1);
                }
                if decides {
                    next.phase = Phase::Closed;
                    next.probes_in_flight = 0;
                    next.probe_deadline_ms = 0;
                    next.consecutive_errors = 0;
                    let now = now_ms();
                    next.closed_since_ms = now;
                    next.reset_window(now);
                    transition = Transition::Closed;
                }
            }
            Verdict::Failure => {
                if policy.consecutive_errors.is_some() {
                    next.consecutive_errors = next.consecutive_errors.saturating_add(1);
                }
                if policy.tracks_window() {
                    next.roll_window(policy, now_ms());
                    next.window_requests = next.window_requests.saturating_add(1);
                    next.window_errors = next.window_errors.saturating_add(1);
                }
                let trip = match next.phase {
                    Phase::Closed => next.over_threshold(policy),
                    Phase::HalfOpen => decides,
                    Phase::Open => false,
                };
                if trip
                    && next.phase == Phase::Closed
                    && policy.max_ejection_percent < 100
                    && !may_trip()
                {
                    next.consecutive_errors = 0;
                    next.reset_window(now_ms());
                    transition = Transition::TripSkipped;
                } else if trip {
                    transition = Transition::Tripped {
                        ejection_ms: next.trip(policy, now_ms()),
                    };
                }
            }
        }
        (transition, (next != *self).then_some(next))
    }

    fn over_threshold(&self, policy: &Policy) -> bool {
        let consecutive = policy
            .consecutive_errors
            .is_some_and(|n| self.consecutive_errors >= n);
        let ratio = policy.error_ratio_percent.is_some_and(|percent| {
            self.window_requests >= policy.min_request_volume
                && u64::from(self.window_errors) * 100
                    >= u64::from(percent) * u64::from(self.window_requests)
        });
        consecutive || ratio
    }

    /// Opens the breaker; returns the ejection time.
    fn trip(&mut self, policy: &Policy, now_ms: u64) -> u64 {
        let remembered = if self.phase == Phase::Closed && self.closed_since_ms > 0 {
            let healthy_intervals =
                now_ms.saturating_sub(self.closed_since_ms) / policy.interval_ms;
            self.trips
                .saturating_sub(u32::try_from(healthy_intervals).unwrap_or(u32::MAX))
        } else {
            self.trips
        };
        self.trips = remembered.saturating_add(1);
        let ejection_ms = policy.ejection_ms(self.trips);
        self.phase = Phase::Open;
        self.open_until_ms = now_ms.saturating_add(ejection_ms);
        self.generation = self.generation.wrapping_add(1);
        self.consecutive_errors = 0;
        self.probes_in_flight = 0;
        self.probe_deadline_ms = 0;
        self.reset_window(now_ms);
        ejection_ms
    }

    fn roll_window(&mut self, policy: &Policy, now_ms: u64) {
        // A clock that went backwards also starts a new window rather than extending one.
        if now_ms < self.window_start_ms || now_ms - self.window_start_ms >= policy.interval_ms {
            self.reset_window(now_ms);
        }
    }

    fn reset_window(&mut self, now_ms: u64) {
        self.window_start_ms = now_ms;
        self.window_requests = 0;
        self.window_errors = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::test_support::*;
    use crate::breaker::{is_unavailable, is_unavailable_with_clock};
    use std::cell::Cell;

    /// The healthy-case shortcuts of admission and outcome decide exactly as the general path,
    /// over every phase, error count, window, slot and probe combination of three policies.
    #[test]
    fn shortcuts_agree_with_the_general_path() {
        let policies = [
            consecutive(3),
            policy(
                r#"{"errorRatio": {"thresholdPercent": 50, "minRequestVolume": 2}, "interval": "10s"}"#,
            ),
            policy(r#"{"consecutiveErrors": 2, "maxConcurrentRequests": 2}"#),
        ];
        let mut states = Vec::new();
        for phase in [Phase::Closed, Phase::Open, Phase::HalfOpen] {
            for consecutive_errors in [0, 1] {
                for (window_requests, window_errors) in [(0, 0), (3, 1)] {
                    for (in_flight, probes_in_flight) in [(0, 0), (1, 1), (2, 2)] {
                        states.push(BreakerState {
                            phase,
                            consecutive_errors,
                            window_requests,
                            window_errors,
                            window_start_ms: 1_000,
                            in_flight,
                            probes_in_flight,
                            open_until_ms: 5_000,
                            probe_deadline_ms: 6_000,
                            generation: 4,
                            ..Default::default()
                        });
                    }
                }
            }
        }
        let mut checked = 0;
        for p in &policies {
            for s in &states {
                for now in [2_000, 9_000] {
                    assert_eq!(
                        s.admit_with_clock(p, || now),
                        s.admit_general(p, || now),
                        "{s:?} {p:?}"
                    );
                }
                for (probe, holds_slot, generation) in [
                    (false, false, 4),
                    (false, true, 4),
                    (true, false, 4),
                    (true, true, 3),
                ] {
                    let ticket = Ticket {
                        probe,
                        holds_slot,
                        generation,
                    };
                    for verdict in [Verdict::Success, Verdict::Failure, Verdict::Ignored] {
                        let shortcut = s.record_capped(p, ticket, verdict, || 9_000, || true);
                        let general = s.record_general(p, ticket, verdict, || 9_000, || true);
                        assert_eq!(shortcut, general, "{s:?} {p:?} {ticket:?} {verdict:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 36 * 4 * 3);
    }

    #[test]
    fn opens_after_exactly_n_consecutive_errors() {
        let p = consecutive(3);
        let mut s = BreakerState::default();
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1000),
            Ok(Transition::None)
        );
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1001),
            Ok(Transition::None)
        );
        // A success in between resets the streak.
        assert_eq!(
            request(&mut s, &p, Verdict::Success, 1002),
            Ok(Transition::None)
        );
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1003),
            Ok(Transition::None)
        );
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1004),
            Ok(Transition::None)
        );
        assert!(!s.is_open(1004));
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1005),
            Ok(Transition::Tripped { ejection_ms: 1000 })
        );
        assert!(s.is_open(1005));
        assert_eq!(
            request(&mut s, &p, Verdict::Success, 1500),
            Err(Rejection::Open)
        );
        assert_eq!(s.open_until_ms, 2005);
    }

    #[test]
    fn ignored_outcomes_do_not_break_or_reset_a_streak() {
        let p = consecutive(2);
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 1).unwrap();
        request(&mut s, &p, Verdict::Ignored, 2).unwrap();
        assert_eq!(s.consecutive_errors, 1);
        assert!(matches!(
            request(&mut s, &p, Verdict::Failure, 3),
            Ok(Transition::Tripped { .. })
        ));
    }

    #[test]
    fn half_open_lets_probes_through_and_a_success_closes() {
        let mut p = consecutive(1);
        p.half_open_probes = 2;
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 10_000).unwrap();
        assert_eq!(admit(&mut s, &p, 10_999), Decision::Reject(Rejection::Open));
        assert_eq!(s.effective_phase(11_000), Phase::HalfOpen);
        assert!(!is_unavailable(Some(&s.encode()), 11_000));
        let first = admit(&mut s, &p, 11_000);
        let second = admit(&mut s, &p, 11_001);
        assert!(matches!(first, Decision::Admit(Ticket { probe: true, .. })));
        assert!(matches!(
            second,
            Decision::Admit(Ticket { probe: true, .. })
        ));
        assert_eq!(s.phase, Phase::HalfOpen);
        // Probe budget used up: the third is rejected as open.
        assert_eq!(admit(&mut s, &p, 11_002), Decision::Reject(Rejection::Open));
        assert_eq!(
            finish(&mut s, &p, first, Verdict::Success, 11_050),
            Transition::Closed
        );
        assert_eq!(s.phase, Phase::Closed);
        // The second probe's late failure belongs to a closed breaker: an ordinary error.
        assert!(matches!(
            finish(&mut s, &p, second, Verdict::Failure, 11_060),
            Transition::Tripped { .. }
        ));
    }

    #[test]
    fn failed_probe_reopens_with_backoff_capped_at_max() {
        let p = consecutive(1); // base 1s, max 3s
        let mut s = BreakerState::default();
        let mut now = 0;
        let mut ejections = Vec::new();
        request(&mut s, &p, Verdict::Failure, now).unwrap();
        ejections.push(s.open_until_ms - now);
        for _ in 0..4 {
            now = s.open_until_ms;
            match request(&mut s, &p, Verdict::Failure, now) {
                Ok(Transition::Tripped { ejection_ms }) => ejections.push(ejection_ms),
                other => panic!("probe failure must reopen: {other:?}"),
            }
        }
        assert_eq!(ejections, [1000, 2000, 3000, 3000, 3000]);
        assert_eq!(s.trips, 5);
    }

    #[test]
    fn trips_decay_while_closed() {
        let p = consecutive(1); // interval 10s
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 0).unwrap(); // trip 1, 1s
        request(&mut s, &p, Verdict::Failure, 1000).unwrap(); // probe fails, trip 2, 2s
        assert_eq!(
            request(&mut s, &p, Verdict::Success, 3000),
            Ok(Transition::Closed)
        );
        // 10s healthy forgets one trip: the next trip is the 2nd again (2s), not the 3rd.
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 13_000),
            Ok(Transition::Tripped { ejection_ms: 2000 })
        );
        request(&mut s, &p, Verdict::Success, 15_000).unwrap();
        // 40s healthy forgets everything.
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 55_000),
            Ok(Transition::Tripped { ejection_ms: 1000 })
        );
    }

    #[test]
    fn stale_probe_from_earlier_episode_decides_nothing() {
        let mut p = consecutive(1);
        p.half_open_probes = 2;
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 0).unwrap();
        let old = admit(&mut s, &p, 1000);
        request(&mut s, &p, Verdict::Failure, 1001).unwrap(); // reopens, generation moves on
        let now = s.open_until_ms;
        let fresh = admit(&mut s, &p, now);
        assert!(matches!(fresh, Decision::Admit(Ticket { probe: true, .. })));
        assert_eq!(
            finish(&mut s, &p, old, Verdict::Success, now + 1),
            Transition::None
        );
        assert_eq!(s.phase, Phase::HalfOpen);
        assert_eq!(s.probes_in_flight, 1);
        assert_eq!(
            finish(&mut s, &p, fresh, Verdict::Success, now + 2),
            Transition::Closed
        );
    }

    #[test]
    fn a_probe_past_its_timeout_fails_and_frees_the_breaker() {
        let mut p = consecutive(1);
        p.probe_timeout_ms = 5_000;
        assert_eq!(
            policy(r#"{"consecutiveErrors": 1}"#).probe_timeout_ms,
            10_000,
            "default probeTimeout"
        );
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 10_000).unwrap(); // trip 1: 1s
        let t0 = s.open_until_ms;
        let slow = admit(&mut s, &p, t0);
        assert!(matches!(slow, Decision::Admit(Ticket { probe: true, .. })));
        assert_eq!((s.probe_slots, s.probe_deadline_ms), (1, t0 + 5_000));
        // Within the deadline: the slot is taken, others are rejected and the canary sees the
        // cluster as unavailable, as when open.
        assert_eq!(
            admit(&mut s, &p, t0 + 4_999),
            Decision::Reject(Rejection::Open)
        );
        assert!(is_unavailable(Some(&s.encode()), t0 + 4_999));
        // Past it: reclaimable, so available to the canary; the next admission counts the
        // probe as failed, reopens with the next (doubled) ejection and frees the slot.
        assert!(!is_unavailable(Some(&s.encode()), t0 + 5_000));
        assert_eq!(
            admit(&mut s, &p, t0 + 5_000),
            Decision::Reject(Rejection::ProbeOverrun { ejection_ms: 2_000 })
        );
        assert_eq!(s.phase, Phase::Open);
        assert_eq!(
            (s.trips, s.probes_in_flight, s.probe_deadline_ms),
            (2, 0, 0)
        );
        assert_eq!(s.open_until_ms, t0 + 7_000);
        assert!(is_unavailable(Some(&s.encode()), t0 + 6_999));
        // The slow probe's late success belongs to the earlier episode: it closes nothing.
        assert_eq!(
            finish(&mut s, &p, slow, Verdict::Success, t0 + 6_000),
            Transition::None
        );
        assert_eq!(s.phase, Phase::Open);
        // The next episode probes afresh, and a prompt success closes.
        let probe = admit(&mut s, &p, t0 + 7_000);
        assert!(matches!(probe, Decision::Admit(Ticket { probe: true, .. })));
        assert_eq!(
            finish(&mut s, &p, probe, Verdict::Success, t0 + 7_100),
            Transition::Closed
        );
        assert_eq!((s.probes_in_flight, s.probe_deadline_ms), (0, 0));
    }

    #[test]
    fn the_probe_deadline_is_the_oldest_probes_and_clears_with_the_last() {
        let mut p = consecutive(1);
        p.half_open_probes = 2;
        p.probe_timeout_ms = 5_000;
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 0).unwrap();
        let t0 = s.open_until_ms;
        let first = admit(&mut s, &p, t0);
        // One slot of two taken: still available to the canary.
        assert!(!is_unavailable(Some(&s.encode()), t0 + 1));
        let second = admit(&mut s, &p, t0 + 2_000);
        assert!(matches!(
            second,
            Decision::Admit(Ticket { probe: true, .. })
        ));
        assert_eq!(s.probe_deadline_ms, t0 + 5_000);
        assert!(is_unavailable(Some(&s.encode()), t0 + 2_001));
        assert_eq!(
            finish(&mut s, &p, first, Verdict::Ignored, t0 + 2_500),
            Transition::None
        );
        assert_eq!((s.probes_in_flight, s.probe_deadline_ms), (1, t0 + 5_000));
        assert_eq!(
            finish(&mut s, &p, second, Verdict::Ignored, t0 + 2_600),
            Transition::None
        );
        assert_eq!((s.probes_in_flight, s.probe_deadline_ms), (0, 0));
        // No probe in flight: nothing overran, the next request probes.
        assert!(matches!(
            admit(&mut s, &p, t0 + 60_000),
            Decision::Admit(Ticket { probe: true, .. })
        ));
    }

    #[test]
    fn ignored_probe_frees_its_slot() {
        let p = consecutive(1);
        let mut s = BreakerState::default();
        request(&mut s, &p, Verdict::Failure, 0).unwrap();
        let probe = admit(&mut s, &p, 1000);
        assert_eq!(admit(&mut s, &p, 1001), Decision::Reject(Rejection::Open));
        assert_eq!(
            finish(&mut s, &p, probe, Verdict::Ignored, 1002),
            Transition::None
        );
        assert!(matches!(
            admit(&mut s, &p, 1003),
            Decision::Admit(Ticket { probe: true, .. })
        ));
    }

    #[test]
    fn error_ratio_needs_volume_and_threshold() {
        let p = policy(
            r#"{"errorRatio": {"thresholdPercent": 50, "minRequestVolume": 4},
                "interval": "1s", "baseEjectionTime": "5s"}"#,
        );
        let mut s = BreakerState::default();
        // 3 of 3 failed, but below the minimum volume.
        for t in 0..3 {
            assert_eq!(
                request(&mut s, &p, Verdict::Failure, t),
                Ok(Transition::None)
            );
        }
        // The window expires: counts start over.
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1000),
            Ok(Transition::None)
        );
        assert_eq!((s.window_requests, s.window_errors), (1, 1));
        request(&mut s, &p, Verdict::Success, 1001).unwrap();
        request(&mut s, &p, Verdict::Success, 1002).unwrap();
        // 2 errors of 4 = 50%: trips.
        assert_eq!(
            request(&mut s, &p, Verdict::Failure, 1003),
            Ok(Transition::Tripped { ejection_ms: 5000 })
        );
    }

    #[test]
    fn concurrency_limit_overflows_and_releases_slots_exactly_once() {
        let p = policy(r#"{"maxConcurrentRequests": 2}"#);
        let mut s = BreakerState::default();
        let a = admit(&mut s, &p, 0);
        let b = admit(&mut s, &p, 0);
        assert_eq!(s.in_flight, 2);
        assert_eq!(admit(&mut s, &p, 0), Decision::Reject(Rejection::Overflow));
        // Whatever the outcome, the slot comes back.
        finish(&mut s, &p, a, Verdict::Ignored, 1);
        assert_eq!(s.in_flight, 1);
        let c = admit(&mut s, &p, 1);
        finish(&mut s, &p, b, Verdict::Failure, 2);
        finish(&mut s, &p, c, Verdict::Success, 2);
        assert_eq!(s.in_flight, 0);
        // Without a limit nothing is counted, so closed-and-healthy admission never writes.
        let q = consecutive(5);
        assert_eq!(BreakerState::default().admit(&q, 0).1, None);
        let t = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        assert_eq!(
            BreakerState::default().record(&q, t, Verdict::Success, 0).1,
            None
        );
    }

    #[test]
    fn record_reads_the_clock_only_when_the_outcome_uses_it() {
        // Counts clock reads; the answer is the same `now` `record` would be given.
        fn recorded(
            state: &BreakerState,
            p: &Policy,
            ticket: Ticket,
            verdict: Verdict,
            now: u64,
        ) -> (usize, (Transition, Option<BreakerState>)) {
            let reads = Cell::new(0);
            let result = state.record_with_clock(p, ticket, verdict, || {
                reads.set(reads.get() + 1);
                now
            });
            assert_eq!(
                result,
                state.record(p, ticket, verdict, now),
                "same as record"
            );
            (reads.get(), result)
        }
        let plain = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        let p = consecutive(2);
        let clean = BreakerState::default();
        // Healthy traffic on a clean closed breaker: no clock, no write.
        assert_eq!(
            recorded(&clean, &p, plain, Verdict::Success, 7),
            (0, (Transition::None, None))
        );
        assert_eq!(recorded(&clean, &p, plain, Verdict::Ignored, 7).0, 0);
        // An error below the threshold counts without the clock; the one that trips reads it once.
        let (reads, (_, one_error)) = recorded(&clean, &p, plain, Verdict::Failure, 7);
        assert_eq!(reads, 0);
        let one_error = one_error.expect("the error is counted");
        let (reads, (trip, _)) = recorded(&one_error, &p, plain, Verdict::Failure, 7);
        assert_eq!(reads, 1);
        assert!(matches!(trip, Transition::Tripped { .. }));
        // A success resetting the error count writes, still without the clock.
        let (reads, (_, reset)) = recorded(&one_error, &p, plain, Verdict::Success, 7);
        assert_eq!((reads, reset.map(|s| s.consecutive_errors)), (0, Some(0)));
        // A probe closing a half-open episode stamps the time.
        let mut half_open = clean;
        half_open.phase = Phase::HalfOpen;
        half_open.probes_in_flight = 1;
        let probe = Ticket {
            probe: true,
            ..plain
        };
        let (reads, (closed, after)) = recorded(&half_open, &p, probe, Verdict::Success, 9);
        assert_eq!((reads, closed), (1, Transition::Closed));
        assert_eq!(after.map(|s| s.closed_since_ms), Some(9));
        // A ratio window rolls on every outcome, so it always reads the clock (once).
        let ratio = policy(
            r#"{"errorRatio": {"thresholdPercent": 50, "minRequestVolume": 4},
                "interval": "10s", "baseEjectionTime": "1s"}"#,
        );
        assert_eq!(recorded(&clean, &ratio, plain, Verdict::Success, 7).0, 1);
        assert_eq!(recorded(&clean, &ratio, plain, Verdict::Failure, 7).0, 1);
    }

    #[test]
    fn admission_and_availability_read_the_clock_only_when_a_deadline_matters() {
        // Every phase, before and after the ejection end and the probe deadline, with and
        // without a concurrency limit: the lazy forms answer as the eager ones and call the
        // clock at most once, never for a closed breaker; availability reads it only for a
        // stored open phase or a half-open one with every probe slot taken.
        let limited = policy(
            r#"{"consecutiveErrors": 2, "maxConcurrentRequests": 1, "interval": "10s",
                "baseEjectionTime": "1s"}"#,
        );
        let policies = [consecutive(2), limited];
        let mut states = Vec::new();
        for phase in [Phase::Closed, Phase::Open, Phase::HalfOpen] {
            for probes_in_flight in [0, 5] {
                for in_flight in [0, 1] {
                    states.push(BreakerState {
                        phase,
                        open_until_ms: 100,
                        probes_in_flight,
                        in_flight,
                        generation: 3,
                        probe_slots: 1,
                        probe_deadline_ms: 100,
                        ..BreakerState::default()
                    });
                }
            }
        }
        for state in &states {
            for p in &policies {
                for now in [99, 100, 101] {
                    let reads = Cell::new(0);
                    let clock = || {
                        reads.set(reads.get() + 1);
                        now
                    };
                    assert_eq!(
                        state.admit_with_clock(p, clock),
                        state.admit(p, now),
                        "{state:?} at {now}"
                    );
                    let open = state.phase == Phase::Open;
                    let admit_reads = reads.replace(0);
                    assert!(admit_reads <= 1, "admit {state:?}");
                    if open {
                        assert_eq!(admit_reads, 1, "admit {state:?}");
                    }
                    if state.phase == Phase::Closed {
                        assert_eq!(admit_reads, 0, "admit {state:?}");
                    }
                    assert_eq!(state.is_open_with_clock(clock), state.is_open(now));
                    assert_eq!(reads.replace(0), usize::from(open), "is_open {state:?}");
                    let full = state.phase == Phase::HalfOpen
                        && state.probes_in_flight >= state.probe_slots;
                    let encoded = state.encode();
                    assert_eq!(
                        is_unavailable_with_clock(Some(&encoded), clock),
                        is_unavailable(Some(&encoded), now)
                    );
                    assert_eq!(reads.replace(0), usize::from(open || full));
                }
            }
        }
        // No value, or one that does not decode: not open, and no clock.
        let reads = Cell::new(0);
        let clock = || {
            reads.set(reads.get() + 1);
            0
        };
        assert!(!is_unavailable_with_clock(None, clock));
        assert!(!is_unavailable_with_clock(Some(b"junk"), clock));
        assert_eq!(reads.get(), 0);
    }

    #[test]
    fn an_ignored_outcome_without_slot_or_probe_records_nothing_in_any_state() {
        let limited = policy(
            r#"{"consecutiveErrors": 2, "maxConcurrentRequests": 3,
                "errorRatio": {"thresholdPercent": 50, "minRequestVolume": 4},
                "interval": "10s", "baseEjectionTime": "1s"}"#,
        );
        let plain = Ticket {
            probe: false,
            holds_slot: false,
            generation: 1,
        };
        for phase in [Phase::Closed, Phase::Open, Phase::HalfOpen] {
            let state = BreakerState {
                phase,
                generation: 1,
                consecutive_errors: 1,
                probes_in_flight: 1,
                in_flight: 2,
                window_requests: 3,
                window_errors: 1,
                ..BreakerState::default()
            };
            for p in [&consecutive(2), &limited] {
                assert!(!plain.records_anything(Verdict::Ignored));
                assert_eq!(
                    state.record(p, plain, Verdict::Ignored, 5_000),
                    (Transition::None, None),
                    "{phase:?}"
                );
                // Anything else may change the state, so it must be recorded.
                assert!(plain.records_anything(Verdict::Success));
                assert!(plain.records_anything(Verdict::Failure));
                for ticket in [
                    Ticket {
                        probe: true,
                        ..plain
                    },
                    Ticket {
                        holds_slot: true,
                        ..plain
                    },
                ] {
                    assert!(ticket.records_anything(Verdict::Ignored));
                }
            }
        }
    }

    #[test]
    fn a_capped_trip_is_skipped_and_asks_only_when_a_closed_breaker_would_open() {
        let capped = policy(
            r#"{"consecutiveErrors": 2, "maxEjectionPercent": 50, "baseEjectionTime": "1s"}"#,
        );
        assert_eq!(capped.max_ejection_percent, 50);
        assert_eq!(consecutive(2).max_ejection_percent, 100);
        let plain = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        let asked = Cell::new(0);
        let refuse = || {
            asked.set(asked.get() + 1);
            false
        };
        let closed = BreakerState::default();
        // Below the threshold, and on success: never asked.
        let (t, one) = closed.record_capped(&capped, plain, Verdict::Failure, || 5, refuse);
        assert_eq!((t, asked.get()), (Transition::None, 0));
        let one = one.unwrap();
        let (t, _) = one.record_capped(&capped, plain, Verdict::Success, || 5, refuse);
        assert_eq!((t, asked.get()), (Transition::None, 0));
        // At the threshold: asked once; refused, it stays closed and counts from zero.
        let (t, next) = one.record_capped(&capped, plain, Verdict::Failure, || 7, refuse);
        assert_eq!((t, asked.get()), (Transition::TripSkipped, 1));
        let next = next.unwrap();
        assert_eq!(next.phase, Phase::Closed);
        assert_eq!(
            (next.consecutive_errors, next.trips, next.generation),
            (0, 0, 0)
        );
        // Allowed: it trips as usual.
        let (t, next) = one.record_capped(&capped, plain, Verdict::Failure, || 7, || true);
        assert!(matches!(t, Transition::Tripped { ejection_ms: 1_000 }));
        assert_eq!(next.unwrap().phase, Phase::Open);
        // Without a cap: never asked.
        let (t, _) = one.record_capped(&consecutive(2), plain, Verdict::Failure, || 7, refuse);
        assert!(matches!(t, Transition::Tripped { .. }));
        assert_eq!(asked.get(), 1);
        // A half-open probe failing reopens without asking: that breaker already counts.
        let half_open = BreakerState {
            phase: Phase::HalfOpen,
            probes_in_flight: 1,
            generation: 3,
            ..BreakerState::default()
        };
        let probe = Ticket {
            probe: true,
            holds_slot: false,
            generation: 3,
        };
        let (t, _) = half_open.record_capped(&capped, probe, Verdict::Failure, || 9, refuse);
        assert!(matches!(t, Transition::Tripped { .. }));
        assert_eq!(asked.get(), 1);
    }
}
