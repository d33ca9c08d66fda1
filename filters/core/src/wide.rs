//! u128 arithmetic the wasm modules can afford.
//!
//! A u128 `/` or `%` links compiler-builtins' `__udivti3` (`u128_div_rem`, about 1 KB) into
//! every module that reaches it. Every u128 division in the filters has a divisor below 2^32
//! (a weight, 10, 10^6), which a long division in base 2^32 with u64 steps does exactly.

/// `n / d` and `n % d`, exactly as u128 `/` and `%` compute them, for a divisor `d` below
/// 2^32 (`d` 0 is refused: `None`, where `/` would panic).
pub(crate) fn div_rem(n: u128, d: u32) -> Option<(u128, u32)> {
    let d = u64::from(d);
    if d == 0 {
        return None;
    }
    let mut quotient: u128 = 0;
    let mut remainder: u64 = 0;
    for shift in [96u32, 64, 32, 0] {
        // remainder < d < 2^32, so `current` < d * 2^32 and `current / d` < 2^32.
        let limb = u64::try_from((n >> shift) & 0xffff_ffff).unwrap_or(0);
        let current = (remainder << 32) | limb;
        quotient = (quotient << 32) | u128::from(current / d);
        remainder = current % d;
    }
    Some((quotient, u32::try_from(remainder).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_u128_division() {
        let mut values = vec![
            0u128,
            1,
            9,
            10,
            11,
            u128::from(u32::MAX),
            u128::from(u64::MAX),
        ];
        values.extend([u128::MAX, u128::MAX - 1, 1 << 127, (1 << 96) + 12345]);
        // A deterministic spread over the whole range (xorshift).
        let mut x: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x);
            values.push(x >> (x % 128));
        }
        let divisors = [
            1u32,
            2,
            3,
            7,
            10,
            1_000,
            1_000_000,
            65_537,
            u32::MAX - 1,
            u32::MAX,
        ];
        for &n in &values {
            for &d in &divisors {
                let expected = (n / u128::from(d), u32::try_from(n % u128::from(d)).unwrap());
                assert_eq!(div_rem(n, d), Some(expected), "{n} / {d}");
            }
        }
        assert_eq!(div_rem(5, 0), None);
    }
}
