//! Bounds for statistical assertions that never flake.
//!
//! A weighted split or a percentage fault is random per request, so a test asserts that the
//! observed count lies in an interval that a correct filter misses with probability below
//! [`FALSE_FAILURE_PROBABILITY`]. The interval is exact (summed binomial probabilities, no normal
//! approximation), so it stays right for small `n` and extreme `p`.

/// The probability that a correct implementation fails an assertion of this module: one in a
/// million, split evenly between the two tails.
pub const FALSE_FAILURE_PROBABILITY: f64 = 1e-6;

/// The interval `[low, high]` that `Binomial(n, p)` falls in with probability at least
/// `1 - FALSE_FAILURE_PROBABILITY` (each tail outside it has probability below half of that).
pub fn bounds(n: u64, p: f64) -> (u64, u64) {
    bounds_with(n, p, FALSE_FAILURE_PROBABILITY)
}

/// Like [`bounds`] with the total tail probability `alpha`.
pub fn bounds_with(n: u64, p: f64, alpha: f64) -> (u64, u64) {
    assert!((0.0..=1.0).contains(&p), "probability {p} outside [0, 1]");
    if p == 0.0 {
        return (0, 0);
    }
    if p == 1.0 {
        return (n, n);
    }
    // log P(X = k) by the recurrence P(k+1)/P(k) = (n-k)/(k+1) * p/(1-p), starting from
    // P(0) = (1-p)^n; kept in log space because P(0) underflows for large n.
    let log_odds = (p / (1.0 - p)).ln();
    let mut log_pmf = Vec::with_capacity(usize::try_from(n).unwrap_or(0) + 1);
    let mut current = (n as f64) * (1.0 - p).ln();
    for k in 0..=n {
        log_pmf.push(current);
        current += ((n - k) as f64).ln() - ((k + 1) as f64).ln() + log_odds;
    }
    let max = log_pmf.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let pmf: Vec<f64> = log_pmf.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = pmf.iter().sum();
    let tail = alpha / 2.0 * total;

    // low: the smallest k with P(X < k) <= tail but P(X < k+1) > tail.
    let mut low = 0;
    let mut below = 0.0;
    for (k, mass) in pmf.iter().enumerate() {
        if below + mass > tail {
            low = k as u64;
            break;
        }
        below += mass;
    }
    let mut high = n;
    let mut above = 0.0;
    for (k, mass) in pmf.iter().enumerate().rev() {
        if above + mass > tail {
            high = k as u64;
            break;
        }
        above += mass;
    }
    (low, high)
}

/// Panics unless `observed` out of `n` trials is a plausible outcome of probability `p`
/// (see [`bounds`]). `what` names the quantity in the message.
///
/// ```
/// // 2,000 requests split 20/80: about 400 to v2.
/// sluice_integration::binomial::assert_plausible("requests to v2", 391, 2000, 0.2);
/// ```
pub fn assert_plausible(what: &str, observed: u64, n: u64, p: f64) {
    let (low, high) = bounds(n, p);
    assert!(
        (low..=high).contains(&observed),
        "{what}: {observed} of {n}, but probability {p} puts it in [{low}, {high}] \
         (a correct implementation lands outside with probability < {FALSE_FAILURE_PROBABILITY})"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_coin_bounds_are_symmetric_and_about_five_sigma() {
        let (low, high) = bounds(1000, 0.5);
        assert_eq!(low + high, 1000);
        // sigma = 15.8; 1e-6 two-sided is 4.89 sigma.
        assert!((419..=425).contains(&low), "low {low}");
    }

    #[test]
    fn degenerate_probabilities() {
        assert_eq!(bounds(100, 0.0), (0, 0));
        assert_eq!(bounds(100, 1.0), (100, 100));
    }

    #[test]
    fn small_p_has_a_zero_lower_bound() {
        let (low, high) = bounds(100, 0.01);
        assert_eq!(low, 0);
        // P(X > 8) for Binomial(100, 0.01) is about 1e-5, P(X > 10) about 7e-8.
        assert!((8..=10).contains(&high), "high {high}");
    }

    #[test]
    fn large_n_does_not_underflow() {
        // sigma = 204.9; 4.89 sigma is about 1,002 either side of 60,000.
        let (low, high) = bounds(200_000, 0.3);
        assert!((58_990..=59_010).contains(&low), "low {low}");
        assert!((60_990..=61_010).contains(&high), "high {high}");
    }

    #[test]
    #[should_panic(expected = "requests to v2: 300 of 2000")]
    fn implausible_counts_fail() {
        assert_plausible("requests to v2", 300, 2000, 0.2);
    }
}
