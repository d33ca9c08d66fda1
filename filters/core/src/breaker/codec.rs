//! The shared-data encoding of a [`BreakerState`] (a fixed-length, versioned binary form),
//! its key, and the availability check other filters (the canary) make on the raw value.

use super::state::{BreakerState, Phase};

/// Version byte of the encoding; a value with another version decodes as `None`. Version 2
/// added `probe_slots` and `probe_deadline_ms`.
pub const ENCODING_VERSION: u8 = 2;
/// Length of an encoded [`BreakerState`]: version, phase, 8 x u32, 4 x u64, little endian.
pub const ENCODED_LEN: usize = 2 + 8 * 4 + 4 * 8;

impl BreakerState {
    /// The compact binary form stored in shared data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(ENCODING_VERSION);
        out.push(self.phase as u8);
        for v in [
            self.trips,
            self.generation,
            self.consecutive_errors,
            self.window_requests,
            self.window_errors,
            self.probes_in_flight,
            self.in_flight,
            self.probe_slots,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            self.window_start_ms,
            self.open_until_ms,
            self.closed_since_ms,
            self.probe_deadline_ms,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Decodes [`BreakerState::encode`]'s output; `None` for anything else (other version,
    /// wrong length, unknown phase).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ENCODED_LEN {
            return None;
        }
        let (&[version, phase], mut rest) = bytes.split_first_chunk::<2>()?;
        if version != ENCODING_VERSION {
            return None;
        }
        let mut u32s = [0u32; 8];
        for slot in &mut u32s {
            let (chunk, tail) = rest.split_first_chunk::<4>()?;
            *slot = u32::from_le_bytes(*chunk);
            rest = tail;
        }
        let mut u64s = [0u64; 4];
        for slot in &mut u64s {
            let (chunk, tail) = rest.split_first_chunk::<8>()?;
            *slot = u64::from_le_bytes(*chunk);
            rest = tail;
        }
        let [
            trips,
            generation,
            consecutive_errors,
            window_requests,
            window_errors,
            probes_in_flight,
            in_flight,
            probe_slots,
        ] = u32s;
        let [
            window_start_ms,
            open_until_ms,
            closed_since_ms,
            probe_deadline_ms,
        ] = u64s;
        Some(Self {
            phase: Phase::from_u8(phase)?,
            trips,
            generation,
            consecutive_errors,
            window_start_ms,
            window_requests,
            window_errors,
            open_until_ms,
            closed_since_ms,
            probes_in_flight,
            in_flight,
            probe_slots,
            probe_deadline_ms,
        })
    }
}

/// The shared-data key of `cluster`'s breaker state: `sluice.breaker.<cluster>`.
pub fn shared_data_key(cluster: &str) -> String {
    let mut key = String::with_capacity(crate::wire::BREAKER_KEY_PREFIX.len() + cluster.len());
    key.push_str(crate::wire::BREAKER_KEY_PREFIX);
    key.push_str(cluster);
    key
}

/// For other filters (the canary): whether the cluster whose shared-data value is `value`
/// takes no new request now ([`BreakerState::is_unavailable_with_clock`]): open, or half-open
/// with every probe slot taken by a probe within its deadline. `value` is what
/// `get_shared_data(shared_data_key(cluster))` returned; no value, or one this version cannot
/// decode, means "available". Half-open with a free probe slot counts as available: the
/// breaker lets that probe through.
pub fn is_unavailable(value: Option<&[u8]>, now_ms: u64) -> bool {
    is_unavailable_with_clock(value, || now_ms)
}

/// [`is_unavailable`] with the clock read only when the value decodes to a stored open phase
/// or a half-open one with every probe slot taken: a closed breaker (the healthy case) is
/// answered without a time, so a failover check costs no clock host call. `now_ms` is called
/// at most once.
pub fn is_unavailable_with_clock(value: Option<&[u8]>, now_ms: impl FnOnce() -> u64) -> bool {
    let Some(value) = value else {
        return false;
    };
    // The healthy case without decoding the rest: a value of this encoding stored closed (a
    // closed breaker is available whatever its counts).
    if value.len() == ENCODED_LEN
        && value.first() == Some(&ENCODING_VERSION)
        && value.get(1) == Some(&(Phase::Closed as u8))
    {
        return false;
    }
    BreakerState::decode(value).is_some_and(|state| state.is_unavailable_with_clock(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_rejects_foreign_bytes() {
        let s = BreakerState {
            phase: Phase::HalfOpen,
            trips: 3,
            generation: u32::MAX,
            consecutive_errors: 7,
            window_start_ms: 1_700_000_000_123,
            window_requests: 11,
            window_errors: 5,
            open_until_ms: u64::MAX,
            closed_since_ms: 42,
            probes_in_flight: 1,
            in_flight: 9,
            probe_slots: 2,
            probe_deadline_ms: 1_700_000_010_123,
        };
        let bytes = s.encode();
        assert_eq!(bytes.len(), ENCODED_LEN);
        assert_eq!(BreakerState::decode(&bytes), Some(s));
        let mut other_version = bytes.clone();
        other_version[0] = 1;
        assert_eq!(BreakerState::decode(&other_version), None);
        let mut bad_phase = bytes.clone();
        bad_phase[1] = 9;
        assert_eq!(BreakerState::decode(&bad_phase), None);
        assert_eq!(BreakerState::decode(&bytes[..ENCODED_LEN - 1]), None);
        assert_eq!(BreakerState::decode(b""), None);
        assert!(!is_unavailable(None, 0));
        assert!(!is_unavailable(Some(b"garbage"), 0));
    }
}
