//! Istio percentages as parts per million, and the per-request draw.
//!
//! Istio hands Envoy `FractionalPercent{numerator: value * 10000, denominator: MILLION}`, so
//! a percentage is honoured to 0.0001%. sluice draws in the same unit: a uniform integer in
//! `0..1_000_000` (rejection sampling, so no modulo bias) compared with the share in ppm.

/// One million: 100% in parts per million.
pub const PPM_ALL: u32 = 1_000_000;

/// Why a percentage was refused.
pub fn validate_percentage(value: f64) -> Result<(), String> {
    // Istio: "neither 0.0, nor in range [0.0001, 100.0]". NaN fails every comparison, so it is
    // refused explicitly (Go's check would let it through).
    if value.is_nan() || !(0.0..=100.0).contains(&value) || (value > 0.0 && value < 0.0001) {
        return Err(format!(
            "percentage {} is neither 0.0, nor in range [0.0001, 100.0]",
            decimal(value)
        ));
    }
    Ok(())
}

/// `value` as `{value}` prints it (the shortest decimal that reads back as `value`, never an
/// exponent), without `f64`'s Display: that alone links core's float formatting, about 16 KB
/// of each wasm module. Tried with 0, 1, 2, ... decimals; the first that parses back to the
/// same `f64` is the shortest. Magnitudes of 1e17 and more print their integer value.
fn decimal(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value < 0.0 { "-inf" } else { "inf" }.to_owned();
    }
    let sign = if value.is_sign_negative() { "-" } else { "" };
    let magnitude = value.abs();
    if magnitude >= 1e17 {
        // Integral already (beyond 2^53); u128 holds every f64 below 3.4e38, saturates above.
        // Digit by digit: u128's Display costs each module 1.4 KB, and a u128 `/` 1 KB more
        // ([`crate::wide`]).
        let mut n = magnitude as u128;
        let mut digits = Vec::with_capacity(40);
        while let Some((rest, digit)) = crate::wide::div_rem(n, 10) {
            digits.push(b'0' + digit as u8);
            n = rest;
            if n == 0 {
                break;
            }
        }
        digits.reverse();
        return format!("{sign}{}", std::str::from_utf8(&digits).unwrap_or_default());
    }
    let mut scale = 1.0_f64;
    for decimals in 0..=20_usize {
        let scaled = (magnitude * scale).round();
        if scaled < 1e18 {
            // In [0, 1e18): the cast is exact.
            let digits = format!("{:0>width$}", scaled as u64, width = decimals + 1);
            let (int, frac) = digits.split_at(digits.len() - decimals);
            let text = if decimals == 0 {
                format!("{sign}{int}")
            } else {
                format!("{sign}{int}.{frac}")
            };
            // `scaled / scale` is `text` read back, correctly rounded, without linking the
            // general float parser: both are exact f64s (scaled < 1e18 is an integer, scale
            // a power of ten up to 1e20).
            if scaled / scale == magnitude {
                return text;
            }
        }
        scale *= 10.0;
    }
    // Below 1e-20 (not a percentage anyone writes): the integer part, which is 0.
    format!("{sign}0")
}

/// A validated percentage in parts per million, rounded to the nearest ppm (Istio truncates,
/// which turns 0.29% into 0.2899%).
pub fn percentage_to_ppm(value: f64) -> u32 {
    let ppm = (value * 10_000.0).round();
    if ppm <= 0.0 {
        0
    } else if ppm >= f64::from(PPM_ALL) {
        PPM_ALL
    } else {
        // In (0, 1e6): the cast is exact.
        ppm as u32
    }
}

/// Largest multiple of one million below 2^32: draws at or above it are redrawn so every
/// ppm bucket is exactly equally likely.
const UNBIASED_LIMIT: u32 = (u32::MAX / PPM_ALL) * PPM_ALL;

/// Whether an event with probability `ppm` / 1e6 happens, drawing from `next_u32` (a
/// uniform 32-bit generator). 0 and 100% cost no draw.
pub fn fires(ppm: u32, next_u32: &mut impl FnMut() -> u32) -> bool {
    if ppm == 0 {
        return false;
    }
    if ppm >= PPM_ALL {
        return true;
    }
    // Each redraw happens with probability < 2.3e-4; eight in a row is < 1e-29.
    for _ in 0..8 {
        let draw = next_u32();
        if draw < UNBIASED_LIMIT {
            return draw % PPM_ALL < ppm;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_prints_like_display() {
        for v in [
            0.0,
            -0.0,
            1.0,
            -5.0,
            150.0,
            100.5,
            100.01,
            -0.1,
            0.00005,
            0.0001,
            0.29,
            33.333333,
            1e-7,
            123456.789,
            1e16,
            99999999999999999.0,
            1e17,
            1e20,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.1 + 0.2,
            1.0 / 3.0,
            2.5e-5,
            7e-12,
        ] {
            assert_eq!(decimal(v), format!("{v}"), "{v:e}");
        }
    }

    /// splitmix64: a small, well-mixed generator for the statistical tests.
    fn rng(seed: u64) -> impl FnMut() -> u32 {
        let mut state = seed;
        move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 32) as u32
        }
    }

    #[test]
    fn validates_like_istio() {
        for ok in [0.0, 0.0001, 0.1, 25.0, 100.0] {
            assert_eq!(validate_percentage(ok), Ok(()), "{ok}");
        }
        for bad in [-0.1, 100.01, 0.00005, f64::NAN, f64::INFINITY] {
            let err = validate_percentage(bad).unwrap_err();
            assert!(err.contains("neither 0.0"), "{bad}: {err}");
        }
    }

    #[test]
    fn converts_to_ppm_exactly() {
        assert_eq!(percentage_to_ppm(0.0), 0);
        assert_eq!(percentage_to_ppm(0.0001), 1);
        assert_eq!(percentage_to_ppm(0.1), 1_000);
        assert_eq!(percentage_to_ppm(0.29), 2_900);
        assert_eq!(percentage_to_ppm(25.0), 250_000);
        assert_eq!(percentage_to_ppm(33.3333), 333_333);
        assert_eq!(percentage_to_ppm(100.0), PPM_ALL);
    }

    #[test]
    fn extremes_never_draw() {
        let mut calls = 0;
        let mut counting = || {
            calls += 1;
            0
        };
        assert!(!fires(0, &mut counting));
        assert!(fires(PPM_ALL, &mut counting));
        assert_eq!(calls, 0);
    }

    #[test]
    fn rejects_biased_draws() {
        // The first draw is in the biased tail and must be ignored; the second decides.
        let mut draws = [UNBIASED_LIMIT, 5].into_iter();
        assert!(fires(6, &mut || draws.next().unwrap_or(0)));
        let mut draws = [u32::MAX, 999_999].into_iter();
        assert!(!fires(999_999, &mut || draws.next().unwrap_or(0)));
    }

    /// Binomial bound: |k - n p| <= 5.5 sigma has probability > 1 - 4e-8 (normal tail), so this
    /// test cannot flake; the seeds are fixed anyway.
    fn assert_rate(ppm: u32, n: u32, seed: u64) {
        let mut next = rng(seed);
        let hits = (0..n).filter(|_| fires(ppm, &mut next)).count() as f64;
        let p = f64::from(ppm) / 1e6;
        let mean = f64::from(n) * p;
        let sigma = (f64::from(n) * p * (1.0 - p)).sqrt();
        assert!(
            (hits - mean).abs() <= 5.5 * sigma + 1.0,
            "ppm {ppm}: {hits} hits in {n}, expected {mean} +- {}",
            5.5 * sigma
        );
    }

    #[test]
    fn draws_follow_the_percentage() {
        assert_rate(250_000, 200_000, 1);
        assert_rate(1_000, 2_000_000, 2);
        assert_rate(1, 20_000_000, 3);
        assert_rate(999_999, 2_000_000, 4);
    }
}
