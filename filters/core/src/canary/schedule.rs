//! Progressive schedules: which step applies now, and the start time all workers share.
//!
//! Envoy runs one VM per worker thread, so the start of a schedule cannot be a Rust static: it
//! is a proxy-wasm shared-data record under [`start_key`], written when a worker loads the
//! config and read by every worker. The record carries a fingerprint of the schedule, so
//! loading a *different* schedule for the same split restarts it, while reloading the same one
//! (or only toggling `paused`) keeps its progress.
//!
//! The filter computes the step per request from the cached record and the clock (one cheap
//! host call and a scan of a few steps), so every worker switches at the same instant and a
//! step boundary is exact; only re-reading the shared record happens on a root-context tick
//! (workers that raced on the first write converge within one tick), together with the step
//! gauge. A tick-only evaluation would save the clock read but let workers disagree on the
//! step for up to a tick, sending a client back and forth between members at each boundary.

use std::time::Duration;

use super::bucket::sticky_point;
// The breaker's port to shared data, so one host adapter serves both.
pub use crate::breaker::{SharedStore, StoreError};

/// A validated schedule: the weights of each step and when each step begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledSchedule {
    /// The weights of each step, one per member.
    pub steps: Vec<Vec<u32>>,
    /// When each step begins, in milliseconds since the schedule started (`begins_ms[0] == 0`).
    pub begins_ms: Vec<u64>,
    /// Frozen at the step reached when this config was loaded.
    pub paused: bool,
    /// Identifies the schedule's content (split, members, steps, holds; not `paused`).
    pub fingerprint: u64,
}

impl CompiledSchedule {
    /// Builds the schedule from steps `(weights, hold)`; the caller validated the weights.
    pub fn new(
        split: &str,
        clusters: &[&str],
        steps: &[(Vec<u32>, Duration)],
        paused: bool,
    ) -> Self {
        let mut begins_ms = Vec::with_capacity(steps.len());
        let mut at: u64 = 0;
        let mut canonical = String::new();
        for cluster in clusters {
            canonical.push_str(cluster);
            canonical.push('\n');
        }
        for (weights, hold) in steps {
            begins_ms.push(at);
            at = at.saturating_add(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX));
            for w in weights {
                canonical.push_str(&w.to_string());
                canonical.push(',');
            }
            // As u64 (the same text below 584,000 years): formatting a u128 would cost each
            // module 1.4 KB.
            let micros = u64::try_from(hold.as_micros()).unwrap_or(u64::MAX);
            canonical.push_str(&micros.to_string());
            canonical.push('\n');
        }
        let fingerprint = (u64::from(sticky_point(split, canonical.as_bytes())) << 32)
            | u64::from(sticky_point(&canonical, split.as_bytes()));
        Self {
            steps: steps.iter().map(|(w, _)| w.clone()).collect(),
            begins_ms,
            paused,
            fingerprint,
        }
    }

    /// The index of the step that applies `elapsed_ms` after the start: the last one that has
    /// begun. The last step holds forever.
    pub fn step_at(&self, elapsed_ms: u64) -> usize {
        self.begins_ms
            .iter()
            .rposition(|&begin| begin <= elapsed_ms)
            .unwrap_or(0)
    }

    /// The weights of step `index` (the last step's past the end; empty if there are none).
    pub fn weights(&self, index: usize) -> &[u32] {
        self.steps
            .get(index)
            .or_else(|| self.steps.last())
            .map_or(&[], Vec::as_slice)
    }

    /// The shortest positive hold, which bounds how often the step can change.
    pub fn shortest_hold_ms(&self) -> Option<u64> {
        self.begins_ms
            .windows(2)
            .filter_map(|pair| match pair {
                [a, b] if b > a => Some(b - a),
                _ => None,
            })
            .min()
    }
}

/// The shared-data key of a split's schedule record: `sluice.canary.<split>.start`.
pub fn start_key(split: &str) -> String {
    use crate::wire::{SCHEDULE_KEY_PREFIX, SCHEDULE_KEY_SUFFIX};
    format!("{SCHEDULE_KEY_PREFIX}{split}{SCHEDULE_KEY_SUFFIX}")
}

/// The process-wide state of one split's schedule, as stored in shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleRecord {
    /// [`CompiledSchedule::fingerprint`] of the schedule this record tracks.
    pub fingerprint: u64,
    /// Unix time in milliseconds at which step 0 began (shifted forward by any paused time).
    pub start_ms: u64,
    /// While paused: the elapsed time at which the schedule froze.
    pub frozen_elapsed_ms: Option<u64>,
}

impl ScheduleRecord {
    /// Text form stored in shared data: `v1 <fingerprint hex> <start_ms> <frozen_ms or ->`.
    pub fn encode(&self) -> String {
        match self.frozen_elapsed_ms {
            Some(frozen) => format!("v1 {:016x} {} {frozen}", self.fingerprint, self.start_ms),
            None => format!("v1 {:016x} {} -", self.fingerprint, self.start_ms),
        }
    }

    /// Parses [`Self::encode`]'s output; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let fingerprint = u64::from_str_radix(parts.next()?, 16).ok()?;
        let start_ms = parts.next()?.parse().ok()?;
        let frozen_elapsed_ms = match parts.next()? {
            "-" => None,
            n => Some(n.parse().ok()?),
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            fingerprint,
            start_ms,
            frozen_elapsed_ms,
        })
    }

    /// Milliseconds the schedule has run at `now_ms` (paused time excluded).
    pub fn elapsed_ms(&self, now_ms: u64) -> u64 {
        self.frozen_elapsed_ms
            .unwrap_or_else(|| now_ms.saturating_sub(self.start_ms))
    }

    /// The record a worker loading a schedule (`fingerprint`, `paused`) at `now_ms` wants, given
    /// the one in shared data. `None`: the existing record already fits, nothing to write.
    ///
    /// Idempotent, so all workers loading the same config agree whoever writes first: a new
    /// or different schedule starts now; pausing freezes the elapsed time; resuming moves the
    /// start so the frozen elapsed time continues.
    pub fn reconcile(
        existing: Option<&Self>,
        fingerprint: u64,
        paused: bool,
        now_ms: u64,
    ) -> Option<Self> {
        match existing {
            Some(record) if record.fingerprint == fingerprint => {
                match (paused, record.frozen_elapsed_ms) {
                    (true, Some(_)) | (false, None) => None,
                    (true, None) => Some(Self {
                        frozen_elapsed_ms: Some(record.elapsed_ms(now_ms)),
                        ..*record
                    }),
                    (false, Some(frozen)) => Some(Self {
                        fingerprint,
                        start_ms: now_ms.saturating_sub(frozen),
                        frozen_elapsed_ms: None,
                    }),
                }
            }
            _ => Some(Self {
                fingerprint,
                start_ms: now_ms,
                frozen_elapsed_ms: paused.then_some(0),
            }),
        }
    }
}

/// On config load: makes the shared record fit this schedule (bounded CAS retry loop) and
/// returns the record to use. Never fails: if shared data misbehaves, the worker runs the
/// schedule from its own record starting now.
pub fn sync_on_configure(
    store: &impl SharedStore,
    split: &str,
    schedule: &CompiledSchedule,
    now_ms: u64,
) -> ScheduleRecord {
    sync(store, split, schedule.fingerprint, schedule.paused, now_ms)
}

/// [`sync_on_configure`] for the schedule `fingerprint`, `paused` or not whatever its config
/// says: a halted guard freezes its split's schedule this way.
pub fn sync(
    store: &impl SharedStore,
    split: &str,
    fingerprint: u64,
    paused: bool,
    now_ms: u64,
) -> ScheduleRecord {
    let key = start_key(split);
    let mut wanted = None;
    for _ in 0..8 {
        let (value, cas) = store.get(&key);
        let existing = value.as_deref().and_then(ScheduleRecord::decode);
        let Some(record) =
            ScheduleRecord::reconcile(existing.as_ref(), fingerprint, paused, now_ms)
        else {
            if let Some(record) = existing {
                return record;
            }
            break;
        };
        // A value we cannot decode (or an absent key) is overwritten, still under its CAS.
        match store.set(&key, record.encode().as_bytes(), cas) {
            Ok(()) => return record,
            Err(StoreError::CasMismatch) => wanted = Some(record),
            Err(StoreError::Other) => return record,
        }
    }
    wanted.unwrap_or(ScheduleRecord {
        fingerprint,
        start_ms: now_ms,
        frozen_elapsed_ms: paused.then_some(0),
    })
}

/// On tick: the shared record if it tracks this schedule (so workers converge on one start),
/// else `current` unchanged. Never writes: an old config still draining must not restart the
/// schedule that a newer config wrote.
pub fn refresh_on_tick(
    store: &impl SharedStore,
    split: &str,
    current: ScheduleRecord,
) -> ScheduleRecord {
    store
        .get(&start_key(split))
        .0
        .as_deref()
        .and_then(ScheduleRecord::decode)
        .filter(|record| record.fingerprint == current.fingerprint)
        .unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    fn schedule(holds_ms: &[u64], paused: bool) -> CompiledSchedule {
        let steps: Vec<(Vec<u32>, Duration)> = holds_ms
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                (
                    vec![100 - i as u32 * 10, i as u32 * 10],
                    Duration::from_millis(h),
                )
            })
            .collect();
        CompiledSchedule::new("s", &["a", "b"], &steps, paused)
    }

    #[test]
    fn step_applies_after_the_sum_of_previous_holds() {
        let s = schedule(&[1_000, 2_000, 500], false);
        assert_eq!(s.begins_ms, vec![0, 1_000, 3_000]);
        for (elapsed, step) in [
            (0, 0),
            (999, 0),
            (1_000, 1),
            (2_999, 1),
            (3_000, 2),
            (u64::MAX, 2),
        ] {
            assert_eq!(s.step_at(elapsed), step, "elapsed {elapsed}");
        }
        assert_eq!(s.weights(1), &[90, 10]);
        assert_eq!(s.weights(9), &[80, 20]);
        assert_eq!(s.shortest_hold_ms(), Some(1_000));
        // A zero hold skips its step.
        assert_eq!(schedule(&[0, 1_000], false).step_at(0), 1);
    }

    #[test]
    fn fingerprint_tracks_content_but_not_pausing() {
        assert_eq!(
            schedule(&[1, 2], false).fingerprint,
            schedule(&[1, 2], true).fingerprint
        );
        assert_ne!(
            schedule(&[1, 2], false).fingerprint,
            schedule(&[1, 3], false).fingerprint
        );
        let steps = [(vec![1, 1], Duration::from_secs(1))];
        assert_ne!(
            CompiledSchedule::new("s", &["a", "b"], &steps, false).fingerprint,
            CompiledSchedule::new("s", &["a", "c"], &steps, false).fingerprint
        );
    }

    #[test]
    fn record_round_trips_and_refuses_garbage() {
        for frozen in [None, Some(42)] {
            let r = ScheduleRecord {
                fingerprint: 0xabc,
                start_ms: 1_700_000_000_000,
                frozen_elapsed_ms: frozen,
            };
            assert_eq!(ScheduleRecord::decode(r.encode().as_bytes()), Some(r));
        }
        for bad in [
            &b""[..],
            b"v2 1 2 -",
            b"v1 zz 2 -",
            b"v1 1 2",
            b"v1 1 2 - x",
            b"\xff",
        ] {
            assert_eq!(ScheduleRecord::decode(bad), None);
        }
    }

    #[test]
    fn reconcile_starts_pauses_and_resumes() {
        let fp = 7;
        let fresh = ScheduleRecord::reconcile(None, fp, false, 1_000).unwrap();
        assert_eq!(
            fresh,
            ScheduleRecord {
                fingerprint: fp,
                start_ms: 1_000,
                frozen_elapsed_ms: None
            }
        );
        // Same schedule again: nothing to write.
        assert_eq!(
            ScheduleRecord::reconcile(Some(&fresh), fp, false, 5_000),
            None
        );
        // Pause at 5s: frozen at 4s elapsed, whatever the time later.
        let paused = ScheduleRecord::reconcile(Some(&fresh), fp, true, 5_000).unwrap();
        assert_eq!(paused.elapsed_ms(99_000), 4_000);
        assert_eq!(
            ScheduleRecord::reconcile(Some(&paused), fp, true, 9_000),
            None
        );
        // Resume at 60s: continues from 4s elapsed.
        let resumed = ScheduleRecord::reconcile(Some(&paused), fp, false, 60_000).unwrap();
        assert_eq!(resumed.elapsed_ms(61_000), 5_000);
        // A different schedule restarts.
        let other = ScheduleRecord::reconcile(Some(&resumed), 8, false, 70_000).unwrap();
        assert_eq!(other.elapsed_ms(70_000), 0);
        // Paused from the very start: frozen at step 0.
        assert_eq!(
            ScheduleRecord::reconcile(None, fp, true, 1)
                .unwrap()
                .elapsed_ms(1_000_000),
            0
        );
    }

    /// A shared-data map with Envoy's CAS semantics: every write bumps a global token; a write
    /// with a token fails if the key's token differs; a write without one always succeeds.
    #[derive(Default)]
    struct MapStore {
        map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next: RefCell<u32>,
        /// Writes another worker sneaks in before each of our sets.
        interleave: RefCell<Vec<Vec<u8>>>,
    }

    impl SharedStore for MapStore {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            match self.map.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            }
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            let sneaked = self.interleave.borrow_mut().pop();
            if let Some(other) = sneaked {
                self.set(key, &other, None)?;
            }
            let mut map = self.map.borrow_mut();
            if let (Some(cas), Some((_, current))) = (cas, map.get(key))
                && cas != *current
            {
                return Err(StoreError::CasMismatch);
            }
            *self.next.borrow_mut() += 1;
            map.insert(key.to_string(), (value.to_vec(), *self.next.borrow()));
            Ok(())
        }
    }

    #[test]
    fn first_writer_wins_and_later_workers_adopt_its_start() {
        let store = MapStore::default();
        let s = schedule(&[1_000, 1_000], false);
        let first = sync_on_configure(&store, "s", &s, 10_000);
        assert_eq!(first.start_ms, 10_000);
        // A second worker loading the same config later keeps the first start.
        assert_eq!(sync_on_configure(&store, "s", &s, 10_500), first);
        assert_eq!(refresh_on_tick(&store, "s", first), first);
    }

    #[test]
    fn cas_conflict_is_retried_against_the_winner() {
        let store = MapStore::default();
        let s = schedule(&[1_000, 1_000], false);
        sync_on_configure(&store, "s", &s, 10_000);
        // Pausing races with another worker that paused first (frozen at 500 ms).
        let winner = ScheduleRecord {
            fingerprint: s.fingerprint,
            start_ms: 10_000,
            frozen_elapsed_ms: Some(500),
        };
        store
            .interleave
            .borrow_mut()
            .push(winner.encode().into_bytes());
        let paused = CompiledSchedule { paused: true, ..s };
        assert_eq!(sync_on_configure(&store, "s", &paused, 10_700), winner);
    }

    #[test]
    fn tick_adopts_only_a_record_of_the_same_schedule() {
        let store = MapStore::default();
        let old = schedule(&[1_000, 1_000], false);
        let new = schedule(&[2_000, 1_000], false);
        let old_record = sync_on_configure(&store, "s", &old, 1_000);
        let new_record = sync_on_configure(&store, "s", &new, 5_000);
        assert_eq!(new_record.start_ms, 5_000);
        // The draining old config keeps its own view and does not overwrite the new one.
        assert_eq!(refresh_on_tick(&store, "s", old_record), old_record);
        assert_eq!(refresh_on_tick(&store, "s", new_record), new_record);
        assert_eq!(
            ScheduleRecord::decode(&store.get("sluice.canary.s.start").0.unwrap()),
            Some(new_record)
        );
    }
}
