//! Proxy-wasm shared data as the breaker uses it ([`SharedStore`]), and the bounded
//! compare-and-set loop ([`update`]) every change of a breaker state goes through.

use super::state::BreakerState;

/// Why a shared-data write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Another writer changed the value since it was read; read again and retry.
    CasMismatch,
    /// The host refused for another reason.
    Other,
}

/// Proxy-wasm shared data as the breaker uses it: get returns the value and its CAS token
/// (both `None` when the key does not exist), set succeeds only if the token still matches.
pub trait SharedStore {
    /// Reads `key`.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `key` if its CAS token is still `cas` (`None` only to create a missing key).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// How many times [`update`] re-reads after a CAS conflict before giving up. Conflicts need
/// another worker to write in the microseconds between our get and set; 64 rounds means
/// dozens of workers hammering one key.
pub const MAX_CAS_ATTEMPTS: u32 = 64;

/// Why [`update`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// Every attempt lost a CAS race.
    Contended,
    /// The host refused the write.
    Store,
}

/// Reads `key`, lets `step` compute a result and maybe a new state, and writes the new state
/// with compare-and-set, retrying from a fresh read on conflict (at most
/// [`MAX_CAS_ATTEMPTS`]). `step` must be a pure function of the state: it may run several times.
///
/// A missing key is created with `cas = None`, the only unconditional write: it can overwrite
/// an update another worker made between our read and our create of the same brand-new key.
/// The filter creates the keys of listed clusters at configure time, before traffic, so this
/// window exists only at the first request to an unlisted cluster. A value that does not
/// decode (another encoding version) is replaced, with CAS, by a fresh closed state.
pub fn update<S: SharedStore + ?Sized, T>(
    store: &S,
    key: &str,
    step: impl FnMut(&BreakerState) -> (T, Option<BreakerState>),
) -> Result<(T, BreakerState), UpdateError> {
    update_from(store, key, None, step)
}

/// What [`SharedStore::get`] returned: the value and its CAS token.
pub type Snapshot = (Option<Vec<u8>>, Option<u32>);

/// [`update`], starting from `snapshot` when the caller has just read `key` (the suite reads a
/// member's breaker for the canary's failover, then admits through the same breaker): one
/// shared-data read fewer per request, and as exact. A decision that writes nothing is the
/// decision at the time of that read; one that writes is CAS-checked against it, and a
/// conflict re-reads the store as usual.
pub fn update_from<S: SharedStore + ?Sized, T>(
    store: &S,
    key: &str,
    mut snapshot: Option<Snapshot>,
    mut step: impl FnMut(&BreakerState) -> (T, Option<BreakerState>),
) -> Result<(T, BreakerState), UpdateError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = snapshot.take().unwrap_or_else(|| store.get(key));
        let current = value
            .as_deref()
            .and_then(BreakerState::decode)
            .unwrap_or_default();
        let (out, next) = step(&current);
        let Some(next) = next else {
            return Ok((out, current));
        };
        let cas = if value.is_some() { cas } else { None };
        match store.set(key, &next.encode(), cas) {
            Ok(()) => return Ok((out, next)),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Other) => return Err(UpdateError::Store),
        }
    }
    Err(UpdateError::Contended)
}

/// Creates `key` with a fresh closed state if it does not exist yet (never touches an existing
/// value, so a config reload keeps the breakers' state).
pub fn ensure_exists<S: SharedStore + ?Sized>(store: &S, key: &str) -> Result<(), UpdateError> {
    match store.get(key) {
        (Some(_), _) => Ok(()),
        (None, _) => store
            .set(key, &BreakerState::default().encode(), None)
            .map_err(|_| UpdateError::Store),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::test_support::*;
    use crate::breaker::{
        Decision, Phase, Ticket, Transition, Verdict, is_unavailable, shared_data_key,
    };
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// A store with Envoy's semantics (global CAS counter, `None` creates or overwrites) that
    /// can let a rival writer sneak in between a get and the next set.
    #[derive(Default)]
    struct FakeStore {
        map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: Cell<u32>,
        /// Rival writes to perform right after the next gets, one per get.
        rivals: RefCell<Vec<BreakerState>>,
        gets: Cell<u32>,
        sets: Cell<u32>,
    }

    impl FakeStore {
        fn put(&self, key: &str, value: Vec<u8>) {
            self.next_cas.set(self.next_cas.get() + 1);
            self.map
                .borrow_mut()
                .insert(key.into(), (value, self.next_cas.get()));
        }
    }

    impl SharedStore for FakeStore {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.gets.set(self.gets.get() + 1);
            let out = match self.map.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            };
            if let Some(rival) = self.rivals.borrow_mut().pop() {
                self.put(key, rival.encode());
            }
            out
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.sets.set(self.sets.get() + 1);
            let current = self.map.borrow().get(key).map(|(_, c)| *c);
            if let (Some(want), Some(have)) = (cas, current)
                && want != have
            {
                return Err(StoreError::CasMismatch);
            }
            self.put(key, value.to_vec());
            Ok(())
        }
    }

    #[test]
    fn update_retries_on_cas_conflict_without_losing_the_rivals_write() {
        let store = FakeStore::default();
        let key = shared_data_key("c");
        ensure_exists(&store, &key).unwrap();
        store.sets.set(0);
        let p = consecutive(3);
        // Two rivals each record one failure between our read and our write.
        let rival1 = BreakerState {
            consecutive_errors: 1,
            ..Default::default()
        };
        let rival2 = BreakerState {
            consecutive_errors: 2,
            ..Default::default()
        };
        store.rivals.borrow_mut().extend([rival2, rival1]);
        let ticket = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        let (transition, state) =
            update(&store, &key, |s| s.record(&p, ticket, Verdict::Failure, 5)).unwrap();
        // Our failure lands on top of both rivals': the third consecutive error trips.
        assert!(matches!(transition, Transition::Tripped { .. }));
        assert_eq!(state.phase, Phase::Open);
        assert_eq!(store.sets.get(), 3, "two conflicts, then success");
        let (stored, _) = store.get(&key);
        assert_eq!(BreakerState::decode(&stored.unwrap()), Some(state));
    }

    #[test]
    fn update_from_a_snapshot_reads_nothing_more_and_stays_exact() {
        let store = FakeStore::default();
        let key = shared_data_key("c");
        ensure_exists(&store, &key).unwrap();
        let p = consecutive(2);
        let ticket = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        // A decision that writes nothing is made on the snapshot alone.
        let snapshot = store.get(&key);
        store.gets.set(0);
        let (_, state) = update_from(&store, &key, Some(snapshot), |s| {
            s.record(&p, ticket, Verdict::Success, 5)
        })
        .unwrap();
        assert_eq!(store.gets.get(), 0, "the snapshot stands in for the read");
        assert_eq!(state, BreakerState::default());
        // A rival writes after the snapshot: our write fails its CAS, and the retry re-reads,
        // so the rival's failure and ours both count (the second one trips the breaker).
        let snapshot = store.get(&key);
        let rival = BreakerState {
            consecutive_errors: 1,
            ..Default::default()
        };
        store.put(&key, rival.encode());
        store.gets.set(0);
        store.sets.set(0);
        let (transition, state) = update_from(&store, &key, Some(snapshot), |s| {
            s.record(&p, ticket, Verdict::Failure, 5)
        })
        .unwrap();
        assert!(
            matches!(transition, Transition::Tripped { .. }),
            "{state:?}"
        );
        assert_eq!((store.gets.get(), store.sets.get()), (1, 2));
    }

    #[test]
    fn update_gives_up_when_always_contended_and_skips_writes_without_change() {
        let store = FakeStore::default();
        let key = shared_data_key("c");
        ensure_exists(&store, &key).unwrap();
        let p = consecutive(3);
        store
            .rivals
            .borrow_mut()
            .extend((0..MAX_CAS_ATTEMPTS).map(|i| BreakerState {
                window_requests: i,
                ..Default::default()
            }));
        let ticket = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        let result = update(&store, &key, |s| s.record(&p, ticket, Verdict::Failure, 5));
        assert_eq!(result, Err(UpdateError::Contended));
        assert_eq!(store.sets.get(), MAX_CAS_ATTEMPTS + 1); // + ensure_exists

        let before = store.sets.get();
        let (decision, _) = update(&store, &key, |s| s.admit(&p, 6)).unwrap();
        assert!(matches!(decision, Decision::Admit(_)));
        assert_eq!(
            store.sets.get(),
            before,
            "closed admission without a limit writes nothing"
        );
    }

    #[test]
    fn ensure_exists_keeps_existing_state_and_update_replaces_undecodable_values() {
        let store = FakeStore::default();
        let key = shared_data_key("c");
        let open = BreakerState {
            phase: Phase::Open,
            open_until_ms: 99,
            ..Default::default()
        };
        store.put(&key, open.encode());
        ensure_exists(&store, &key).unwrap();
        assert!(is_unavailable(store.get(&key).0.as_deref(), 50));
        store.put(&key, b"\x07future".to_vec());
        let p = consecutive(1);
        let ticket = Ticket {
            probe: false,
            holds_slot: false,
            generation: 0,
        };
        let (t, _) = update(&store, &key, |s| s.record(&p, ticket, Verdict::Failure, 1)).unwrap();
        assert!(matches!(t, Transition::Tripped { .. }));
        assert!(is_unavailable(store.get(&key).0.as_deref(), 2));
    }
}
