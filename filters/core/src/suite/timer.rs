//! The worker's one timer, as the suite module shares it: proxy-wasm gives a root context a
//! single tick period, and three users want it:
//!
//! - the fault delay queue (its nearest deadline, [`TimerChange`]s from [`DelayQueue`]);
//! - the housekeeping (breaker gauges every [`GAUGE_REFRESH`], canary schedule steps);
//! - the counter flush ([`COUNTER_FLUSH`], only while batched increments are pending).
//!
//! The period armed is the smallest wanted. [`Timer`] decides it and whether the host must be
//! told (a `set_tick_period` call only when the period changes); the module makes the call.
//! It is `Copy` and allocates nothing, because the counter flush is started per request.
//!
//! [`DelayQueue`]: crate::fault::DelayQueue

use std::time::Duration;

use crate::fault::TimerChange;

/// How often breaker gauges are refreshed from shared data (as the breaker filter).
pub const GAUGE_REFRESH: Duration = Duration::from_secs(1);

/// The longest a batched counter increment waits before it is published (the tick period
/// while increments are pending).
pub const COUNTER_FLUSH: Duration = Duration::from_secs(1);

/// The tick period each user wants, the one armed on the host, and when housekeeping is next
/// due. Every method returning `Option<Duration>` returns the period to arm now
/// (`Duration::ZERO`: stop the timer), or `None` when the host already has the right one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timer {
    /// What the delay queue believes is armed.
    queue: Option<Duration>,
    /// Housekeeping period (`None`: no breaker and no schedule).
    housekeeping: Option<Duration>,
    /// [`COUNTER_FLUSH`] while increments are pending.
    flush: Option<Duration>,
    /// What is actually armed on the host.
    armed: Option<Duration>,
    /// When housekeeping is next due (ms since the epoch).
    next_housekeeping_ms: u64,
}

impl Timer {
    /// A (re)configuration: housekeeping every `period`, first due at `now_ms`.
    pub fn configure(&mut self, period: Option<Duration>, now_ms: u64) -> Option<Duration> {
        self.housekeeping = period;
        self.next_housekeeping_ms = now_ms;
        self.rearm()
    }

    /// Applies a delay-queue decision.
    pub fn queue(&mut self, change: TimerChange) -> Option<Duration> {
        match change {
            TimerChange::Keep => return None,
            TimerChange::Set(period) => self.queue = Some(period),
            TimerChange::Off => self.queue = None,
        }
        self.rearm()
    }

    /// The first increment after a flush: the tick must run within [`COUNTER_FLUSH`]. A host
    /// call only when no shorter period is armed already (e.g. the breakers' gauge refresh).
    pub fn start_flush(&mut self) -> Option<Duration> {
        if self.flush.is_some() {
            return None;
        }
        self.flush = Some(COUNTER_FLUSH);
        self.rearm()
    }

    /// After a flush: keeps the tick for the counters only while increments are `pending`.
    pub fn settle_flush(&mut self, pending: bool) -> Option<Duration> {
        if pending || self.flush.is_none() {
            return None;
        }
        self.flush = None;
        self.rearm()
    }

    /// Whether housekeeping is due at `now_ms`; if so, the next one is scheduled a period
    /// later.
    pub fn housekeeping_due(&mut self, now_ms: u64) -> bool {
        let Some(period) = self.housekeeping else {
            return false;
        };
        if now_ms < self.next_housekeeping_ms {
            return false;
        }
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        self.next_housekeeping_ms = now_ms.saturating_add(period_ms);
        true
    }

    /// The smallest period wanted, if it differs from the one armed.
    fn rearm(&mut self) -> Option<Duration> {
        let wanted = [self.queue, self.housekeeping, self.flush]
            .into_iter()
            .flatten()
            .min();
        if wanted == self.armed {
            return None;
        }
        self.armed = wanted;
        Some(wanted.unwrap_or(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn arms_the_smallest_period_and_calls_the_host_only_on_change() {
        let mut timer = Timer::default();
        assert_eq!(timer.configure(Some(GAUGE_REFRESH), 0), Some(GAUGE_REFRESH));
        // A delay shorter than the housekeeping takes over; the same decision again is silent.
        assert_eq!(timer.queue(TimerChange::Set(MS(20))), Some(MS(20)));
        assert_eq!(timer.queue(TimerChange::Set(MS(20))), None);
        assert_eq!(timer.queue(TimerChange::Keep), None);
        // The counter flush wants 1 s: 20 ms stays armed, no host call.
        assert_eq!(timer.start_flush(), None);
        assert_eq!(timer.start_flush(), None);
        // The queue empties: back to the 1 s both the others want.
        assert_eq!(timer.queue(TimerChange::Off), Some(GAUGE_REFRESH));
        assert_eq!(timer.settle_flush(true), None);
        assert_eq!(timer.settle_flush(false), None);
    }

    #[test]
    fn the_flush_alone_starts_and_stops_the_timer() {
        let mut timer = Timer::default();
        assert_eq!(timer.configure(None, 0), None);
        assert_eq!(timer.start_flush(), Some(COUNTER_FLUSH));
        assert_eq!(timer.start_flush(), None);
        // Still pending: the tick keeps running.
        assert_eq!(timer.settle_flush(true), None);
        // Nothing pending: the timer stops (period zero), once.
        assert_eq!(timer.settle_flush(false), Some(Duration::ZERO));
        assert_eq!(timer.settle_flush(false), None);
        assert_eq!(timer.queue(TimerChange::Off), None);
    }

    #[test]
    fn housekeeping_is_due_once_per_period_from_configuration() {
        let mut timer = Timer::default();
        assert!(!timer.housekeeping_due(5_000), "no housekeeping configured");
        let _ = timer.configure(Some(MS(250)), 1_000);
        assert!(timer.housekeeping_due(1_000));
        assert!(!timer.housekeeping_due(1_249));
        assert!(timer.housekeeping_due(1_300));
        // The next one counts from when it ran, not from when it was due.
        assert!(!timer.housekeeping_due(1_549));
        assert!(timer.housekeeping_due(1_550));
        // A reconfiguration makes it due at once.
        let _ = timer.configure(Some(MS(250)), 1_600);
        assert!(timer.housekeeping_due(1_600));
        // The schedule saturates rather than wrapping to the past.
        assert!(timer.housekeeping_due(u64::MAX));
        assert!(!timer.housekeeping_due(u64::MAX - 1));
    }
}
