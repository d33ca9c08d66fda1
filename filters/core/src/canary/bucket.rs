//! Picking a member of a split: weighted, sticky by a hashed key, with breaker failover.
//!
//! # Points and buckets
//!
//! A request is a *point* in `[0, 2^32)`: uniformly random, or the [`sticky_point`] of its key.
//! Members own consecutive buckets of that line in list order, each as wide as its share of the
//! weights' sum: member `k` owns `[C(k-1), C(k)) * 2^32 / total` where `C` is the running sum of
//! the weights. The comparison is done in exact integer arithmetic (`point * total` against
//! `C(k) << 32`), so there is no rounding of weights and weight 0 is an empty bucket. A point
//! space of 2^32 rather than 10 000 keeps shares exact for weights finer than 0.01 % and lets a
//! random `u32` be used as is, with no modulo bias.
//!
//! # Monotonicity
//!
//! The boundary between member `k` and `k+1` sits at `1 - (w(k+1) + ... + w(n-1)) / total` of
//! the line. When the share of every member after the first stays or grows (a rollout that
//! moves traffic away from the stable first member), every boundary stays or moves down, so a
//! point can only move to a later member, never back:
//!
//! - two members (stable, canary): raising the canary's weight only moves keys from stable to
//!   canary, lowering it only moves keys back from canary to stable;
//! - more members: shifting weight between the first member and the *second* moves keys only
//!   between those two (every later boundary is unchanged); in general a key only moves between
//!   the members whose bucket boundary crossed its point, and under a rollout as described above
//!   it only moves to later members.
//!
//! # Failover
//!
//! When the member owning the point is unavailable, the point's offset inside that bucket is
//! stretched over the healthy members' buckets (laid out the same way, without the unhealthy
//! ones). Keys of healthy members never move; the unavailable member's keys spread over the
//! healthy ones in proportion to their weights, deterministically (a sticky key keeps its
//! fallback member), and return to it when it recovers.

/// The fixed hash of a sticky key: FNV-1a 64 over `split`, a 0xff separator byte (never part of
/// UTF-8 text, so `("ab","c")` and `("a","bc")` differ) and `key`, then the 64-bit finaliser of
/// MurmurHash3 (`fmix64`) so every output bit depends on every input bit, keeping the top 32
/// bits. Independent of the platform, worker and process, so a key maps to the same point in
/// every worker and after restarts. Salting with the split name keeps the clients that land in
/// one split's canary from being the same ones in every other split.
pub fn sticky_point(split: &str, key: &[u8]) -> u32 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for &b in split.as_bytes().iter().chain(&[0xff]).chain(key) {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // MurmurHash3 fmix64.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> 32) as u32
}

/// The member whose bucket holds `point`. A single member is always chosen (Istio: one
/// destination takes all traffic whatever its weight); `None` only when several members all
/// weigh 0, which config validation refuses.
pub fn locate(weights: &[u32], point: u32) -> Option<usize> {
    if weights.len() == 1 {
        return Some(0);
    }
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let position = u128::from(point) * total;
    let mut upper: u128 = 0;
    for (index, &weight) in weights.iter().enumerate() {
        upper += u128::from(weight) << 32;
        if position < upper {
            return Some(index);
        }
    }
    None
}

/// The outcome of [`choose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Send the request to the member with this index.
    Member(usize),
    /// Every member that could take traffic is unavailable.
    AllUnavailable,
}

/// Picks the member for `point`, skipping unavailable ones (see the module docs, "Failover").
///
/// `is_available` is asked about the owning member first and, only when that one is
/// unavailable, about the other members with a positive weight, each at most once: in the
/// common case a request costs one availability lookup.
pub fn choose(weights: &[u32], point: u32, mut is_available: impl FnMut(usize) -> bool) -> Choice {
    let Some(primary) = locate(weights, point) else {
        return Choice::AllUnavailable;
    };
    if is_available(primary) {
        return Choice::Member(primary);
    }
    if weights.len() == 1 {
        return Choice::AllUnavailable;
    }
    // Offset of the point inside the primary's bucket, in units where the whole line is
    // `total << 32`; it lies in `[0, w(primary) << 32)`.
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let before: u128 = weights.iter().take(primary).map(|&w| u128::from(w)).sum();
    let offset = (u128::from(point) * total).saturating_sub(before << 32);
    let primary_weight = weights.get(primary).map_or(0, |&w| u128::from(w));

    // Availability of the others, asked once each. Split lengths are a handful; the mask
    // stays on the stack for up to 64 members and members past that count as unavailable
    // (validation caps splits at MAX_MEMBERS).
    let mut healthy_mask: u64 = 0;
    let mut healthy_total: u128 = 0;
    for (index, &weight) in weights.iter().enumerate().take(64) {
        if index != primary && weight > 0 && is_available(index) {
            healthy_mask |= 1 << index;
            healthy_total += u128::from(weight);
        }
    }
    if healthy_total == 0 || primary_weight == 0 {
        return Choice::AllUnavailable;
    }
    // The divisor is one u32 weight: no u128 `/` ([`crate::wide`]).
    let Some((stretched, _)) = u32::try_from(primary_weight)
        .ok()
        .and_then(|weight| crate::wide::div_rem(offset * healthy_total, weight))
    else {
        return Choice::AllUnavailable;
    };
    let mut upper: u128 = 0;
    for (index, &weight) in weights.iter().enumerate().take(64) {
        if healthy_mask & (1 << index) != 0 {
            upper += u128::from(weight) << 32;
            if stretched < upper {
                return Choice::Member(index);
            }
        }
    }
    Choice::AllUnavailable
}

/// The most members a split may have (the failover mask is one `u64`).
pub const MAX_MEMBERS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` evenly spread points (rounded up, so a grid point on a bucket boundary of a weight
    /// that divides `n` lands exactly on it), plus the top end of the line.
    fn grid(n: u32) -> impl Iterator<Item = u32> {
        (0..n)
            .map(move |i| (u64::from(i) * (1u64 << 32)).div_ceil(u64::from(n)) as u32)
            .chain([u32::MAX])
    }

    fn shares(weights: &[u32], n: u32) -> Vec<u32> {
        let mut counts = vec![0; weights.len()];
        for p in grid(n).take(n as usize) {
            counts[locate(weights, p).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn shares_are_exact_proportions_of_any_positive_weights() {
        assert_eq!(shares(&[90, 10], 10_000), vec![9_000, 1_000]);
        assert_eq!(shares(&[9, 1], 10_000), vec![9_000, 1_000]);
        assert_eq!(shares(&[1, 1, 2], 10_000), vec![2_500, 2_500, 5_000]);
        assert_eq!(shares(&[3, 0, 1], 10_000), vec![7_500, 0, 2_500]);
        // Weights need not sum to 100 and may be huge.
        assert_eq!(shares(&[u32::MAX, u32::MAX], 1_000), vec![500, 500]);
    }

    #[test]
    fn zero_weight_is_never_chosen_and_single_member_always_is() {
        for p in grid(100_000) {
            assert_ne!(locate(&[0, 5, 0, 5, 0], p).map(|i| i % 2), Some(0));
            assert_eq!(locate(&[0], p), Some(0));
            assert_eq!(locate(&[7], p), Some(0));
            assert_eq!(locate(&[0, 0], p), None);
            assert_eq!(locate(&[100, 0], p), Some(0));
            assert_eq!(locate(&[0, 100], p), Some(1));
        }
    }

    #[test]
    fn sticky_point_is_fixed_and_spreads_keys() {
        // Pinned value (cross-checked with an independent Python FNV-1a + fmix64): the hash is
        // a contract (keys must map identically across restarts
        // and versions); changing it reshuffles every pinned client.
        assert_eq!(
            sticky_point("reviews", b"alice"),
            sticky_point("reviews", b"alice")
        );
        assert_eq!(sticky_point("reviews", b"alice"), 0x69a2_708d);
        assert_ne!(
            sticky_point("reviews", b"alice"),
            sticky_point("ratings", b"alice")
        );
        assert_ne!(sticky_point("ab", b"c"), sticky_point("a", b"bc"));
        // 100 000 sequential keys over 10 equal buckets: each holds 10 000 +- 6 sigma.
        let mut buckets = [0u32; 10];
        for i in 0..100_000 {
            let p = sticky_point("s", format!("user-{i}").as_bytes());
            buckets[((u64::from(p) * 10) >> 32) as usize] += 1;
        }
        for count in buckets {
            assert!((9_430..=10_570).contains(&count), "{buckets:?}");
        }
    }

    /// The monotonicity property for two members, over many keys and every weight pair on a
    /// grid: raising the canary's weight never moves a key from canary back to stable.
    #[test]
    fn raising_the_canary_only_moves_keys_from_stable_to_canary() {
        let keys: Vec<u32> = (0..2_000)
            .map(|i| sticky_point("s", format!("k{i}").as_bytes()))
            .collect();
        for low in 0..=20u32 {
            for high in low..=20u32 {
                let before = [100 - low * 5, low * 5];
                let after = [100 - high * 5, high * 5];
                for &p in &keys {
                    let (b, a) = (locate(&before, p), locate(&after, p));
                    assert!(
                        !(b == Some(1) && a == Some(0)),
                        "{before:?}->{after:?} p={p}"
                    );
                }
            }
        }
        // Also with a different total before and after (weights are normalised).
        for &p in &keys {
            assert!(!(locate(&[9, 1], p) == Some(1) && locate(&[50, 50], p) == Some(0)));
        }
    }

    /// More members: when every later member's share stays or grows, keys only move to later
    /// members; shifting between the first two leaves the others' keys in place.
    #[test]
    fn rollouts_over_three_members_only_move_keys_forward() {
        let keys: Vec<u32> = (0..2_000)
            .map(|i| sticky_point("s", format!("k{i}").as_bytes()))
            .collect();
        let plans: [[[u32; 3]; 2]; 4] = [
            [[80, 10, 10], [60, 30, 10]],
            [[80, 10, 10], [60, 10, 30]],
            [[80, 10, 10], [40, 30, 30]],
            [[100, 0, 0], [0, 0, 100]],
        ];
        for [before, after] in plans {
            for &p in &keys {
                let (b, a) = (locate(&before, p).unwrap(), locate(&after, p).unwrap());
                assert!(a >= b, "{before:?}->{after:?}: key moved {b}->{a}");
                if before[2] == after[2] {
                    assert_eq!(b == 2, a == 2, "{before:?}->{after:?}: member 2 disturbed");
                }
            }
        }
    }

    #[test]
    fn failover_keeps_healthy_keys_and_spreads_the_rest_by_weight() {
        let weights = [50, 30, 20];
        let mut moved_to = [0u32; 3];
        let n = 100_000;
        for p in grid(n) {
            let healthy = |i: usize| i != 1;
            let primary = locate(&weights, p).unwrap();
            match choose(&weights, p, healthy) {
                Choice::Member(m) => {
                    assert_ne!(m, 1);
                    if primary != 1 {
                        assert_eq!(m, primary, "a healthy member's key moved");
                    } else {
                        moved_to[m] += 1;
                    }
                }
                Choice::AllUnavailable => panic!("members 0 and 2 are healthy"),
            }
        }
        // Member 1's 30 % goes 50:20 to members 0 and 2 (exactly, on an even grid).
        let total = moved_to[0] + moved_to[2];
        assert!((total as i64 - 30_000).abs() <= 2, "{moved_to:?}");
        assert!((i64::from(moved_to[0]) * 20 - i64::from(moved_to[2]) * 50).abs() <= 100);
    }

    #[test]
    fn failover_asks_only_the_primary_when_it_is_healthy() {
        let mut asked = Vec::new();
        let choice = choose(&[90, 10], 0, |i| {
            asked.push(i);
            true
        });
        assert_eq!(choice, Choice::Member(0));
        assert_eq!(asked, vec![0]);
    }

    #[test]
    fn all_unavailable_when_no_positive_member_is_healthy() {
        assert_eq!(choose(&[90, 10, 0], 5, |i| i == 2), Choice::AllUnavailable);
        assert_eq!(choose(&[100], 5, |_| false), Choice::AllUnavailable);
        assert_eq!(choose(&[0], 5, |_| true), Choice::Member(0));
        assert_eq!(choose(&[0, 0], 5, |_| true), Choice::AllUnavailable);
    }
}
