//! Pending delays of one worker, ordered by deadline, and the single root-context timer that
//! resumes them.
//!
//! proxy-wasm gives a root context one periodic timer (`set_tick_period`; Envoy re-arms it
//! with the same period after every `on_tick`). The queue makes that timer follow the nearest
//! deadline: it is armed when the first delay arrives, shortened when an earlier deadline
//! arrives, and switched off when nothing is pending, so an idle filter costs no wake-ups.
//! Every method says what to do with the timer ([`TimerChange`]); the caller applies it with
//! one host call, or none for [`TimerChange::Keep`].
//!
//! Times are nanoseconds on the host clock; the timer has millisecond resolution, so periods
//! round up and a delay ends between its deadline and about a millisecond later.

use std::collections::VecDeque;
use std::time::Duration;

/// What the caller must do with the root context's tick period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerChange {
    /// Nothing: the timer is already right.
    Keep,
    /// `set_tick_period(period)`.
    Set(Duration),
    /// `set_tick_period(0)`: nothing is pending.
    Off,
}

const NANOS_PER_MILLI: u64 = 1_000_000;

/// Pending delays (`context id -> payload`), earliest deadline first.
///
/// A deque sorted by `(deadline, context id)` rather than a `BTreeMap`: a B-tree with removal
/// is ~9 KB of wasm per key/value type, a sorted deque a few hundred bytes. Inserting costs a
/// binary search and a shift of the later entries, which are few: deadlines mostly arrive in
/// order (a rule's fixed delay added to a clock that only grows), so a new one lands at or near
/// the back; due delays leave from the front without moving the rest.
#[derive(Debug)]
pub struct DelayQueue<T> {
    pending: VecDeque<((u64, u32), T)>,
    /// The armed period in ms and when the timer fires next (ns); `None` while off.
    armed: Option<(u64, u64)>,
}

impl<T> Default for DelayQueue<T> {
    fn default() -> Self {
        Self {
            pending: VecDeque::new(),
            armed: None,
        }
    }
}

impl<T> DelayQueue<T> {
    /// An empty queue with the timer off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of pending delays.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether `context_id` is still waiting for `deadline` (not yet taken by a tick).
    pub fn contains(&self, context_id: u32, deadline: u64) -> bool {
        self.position(deadline, context_id).is_ok()
    }

    /// Parks `context_id` until `deadline` (ns). Re-arms the timer only when this deadline is
    /// earlier than the next tick.
    pub fn insert(&mut self, context_id: u32, deadline: u64, payload: T, now: u64) -> TimerChange {
        match self.position(deadline, context_id) {
            // The same stream parked twice for the same deadline: the later payload wins, as
            // a map insertion would have it.
            Ok(at) => {
                if let Some(entry) = self.pending.get_mut(at) {
                    entry.1 = payload;
                }
            }
            Err(at) => self.pending.insert(at, ((deadline, context_id), payload)),
        }
        match self.armed {
            Some((_, fires_at)) if fires_at <= deadline => TimerChange::Keep,
            _ => self.arm_for(deadline, now),
        }
    }

    /// Forgets a pending delay (the stream ended early). Returns its payload, if it was still
    /// pending. Switches the timer off when nothing is left.
    pub fn remove(&mut self, context_id: u32, deadline: u64) -> (Option<T>, TimerChange) {
        let payload = self
            .position(deadline, context_id)
            .ok()
            .and_then(|at| self.pending.remove(at))
            .map(|(_, payload)| payload);
        let change = if self.pending.is_empty() && self.armed.is_some() {
            self.armed = None;
            TimerChange::Off
        } else {
            TimerChange::Keep
        };
        (payload, change)
    }

    /// On a tick: takes every delay whose deadline has passed (earliest first) and says how to
    /// re-arm for the rest. The caller resumes the returned streams after releasing any borrow
    /// of the queue, because resuming can re-enter the filter.
    pub fn take_due(&mut self, now: u64) -> (Vec<(u32, T)>, TimerChange) {
        let mut due = Vec::new();
        while let Some(((deadline, _), _)) = self.pending.front() {
            if *deadline > now {
                break;
            }
            if let Some(((_, context_id), payload)) = self.pending.pop_front() {
                due.push((context_id, payload));
            }
        }
        let change = match self.pending.front() {
            None => {
                if self.armed.take().is_some() {
                    TimerChange::Off
                } else {
                    TimerChange::Keep
                }
            }
            Some(&((deadline, _), _)) => {
                let period_ms = period_ms(deadline, now);
                match self.armed {
                    // Envoy re-arms with the current period after on_tick: nothing to do.
                    Some((armed_ms, _)) if armed_ms == period_ms => {
                        self.armed = Some((period_ms, fires_at(now, period_ms)));
                        TimerChange::Keep
                    }
                    _ => self.arm_for(deadline, now),
                }
            }
        };
        (due, change)
    }

    /// Where `(deadline, context_id)` is (`Ok`) or would be inserted (`Err`).
    fn position(&self, deadline: u64, context_id: u32) -> Result<usize, usize> {
        self.pending
            .binary_search_by(|(key, _)| key.cmp(&(deadline, context_id)))
    }

    fn arm_for(&mut self, deadline: u64, now: u64) -> TimerChange {
        let period_ms = period_ms(deadline, now);
        self.armed = Some((period_ms, fires_at(now, period_ms)));
        TimerChange::Set(Duration::from_millis(period_ms))
    }
}

/// Milliseconds from `now` to `deadline`, rounded up, at least 1 (0 would stop the timer).
fn period_ms(deadline: u64, now: u64) -> u64 {
    deadline
        .saturating_sub(now)
        .div_ceil(NANOS_PER_MILLI)
        .max(1)
}

fn fires_at(now: u64, period_ms: u64) -> u64 {
    now.saturating_add(period_ms.saturating_mul(NANOS_PER_MILLI))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = NANOS_PER_MILLI;

    fn set(ms: u64) -> TimerChange {
        TimerChange::Set(Duration::from_millis(ms))
    }

    #[test]
    fn timer_follows_the_nearest_deadline_and_stops_when_idle() {
        let mut q = DelayQueue::new();
        assert_eq!(q.insert(7, 100 * MS, "a", 0), set(100));
        // A later deadline does not disturb the armed timer.
        assert_eq!(q.insert(8, 300 * MS, "b", 10 * MS), TimerChange::Keep);
        // An earlier one shortens it.
        assert_eq!(q.insert(9, 50 * MS, "c", 20 * MS), set(30));
        // Tick at 50ms: c is due; a is 50ms away, the armed period was 30ms.
        let (due, change) = q.take_due(50 * MS);
        assert_eq!(due, vec![(9, "c")]);
        assert_eq!(change, set(50));
        // Tick at 100ms: a due; b in 200ms.
        let (due, change) = q.take_due(100 * MS);
        assert_eq!(due, vec![(7, "a")]);
        assert_eq!(change, set(200));
        let (due, change) = q.take_due(300 * MS);
        assert_eq!(due, vec![(8, "b")]);
        assert_eq!(change, TimerChange::Off);
        assert!(q.is_empty());
        // A spurious tick with the timer off changes nothing.
        assert_eq!(q.take_due(400 * MS), (vec![], TimerChange::Keep));
    }

    #[test]
    fn same_period_needs_no_host_call() {
        let mut q = DelayQueue::new();
        assert_eq!(q.insert(1, 10 * MS, (), 0), set(10));
        assert_eq!(q.insert(2, 20 * MS, (), 0), TimerChange::Keep);
        let (due, change) = q.take_due(10 * MS);
        assert_eq!(due.len(), 1);
        assert_eq!(change, TimerChange::Keep);
    }

    #[test]
    fn early_tick_waits_for_the_deadline() {
        let mut q = DelayQueue::new();
        assert_eq!(q.insert(1, 10 * MS, (), 0), set(10));
        // The host clock says 9.5ms: not due yet, come back in 1ms (rounded up).
        let (due, change) = q.take_due(9 * MS + MS / 2);
        assert!(due.is_empty());
        assert_eq!(change, set(1));
        let (due, _) = q.take_due(10 * MS);
        assert_eq!(due, vec![(1, ())]);
    }

    #[test]
    fn removal_of_the_last_delay_stops_the_timer() {
        let mut q = DelayQueue::new();
        q.insert(1, 10 * MS, "x", 0);
        q.insert(2, 20 * MS, "y", 0);
        assert!(q.contains(1, 10 * MS));
        assert_eq!(q.remove(1, 10 * MS), (Some("x"), TimerChange::Keep));
        assert!(!q.contains(1, 10 * MS));
        assert_eq!(q.remove(1, 10 * MS), (None, TimerChange::Keep));
        assert_eq!(q.remove(2, 20 * MS), (Some("y"), TimerChange::Off));
        // A new delay re-arms.
        assert_eq!(q.insert(3, 35 * MS, "z", 30 * MS), set(5));
    }

    #[test]
    fn equal_deadlines_are_kept_apart_and_all_resumed() {
        let mut q = DelayQueue::new();
        for id in 0..200 {
            q.insert(id, 5 * MS, id, 0);
        }
        assert_eq!(q.len(), 200);
        let (due, change) = q.take_due(5 * MS);
        assert_eq!(due.len(), 200);
        assert_eq!(change, TimerChange::Off);
    }
}
