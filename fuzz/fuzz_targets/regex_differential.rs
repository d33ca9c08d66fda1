//! `sluice_core::regex` against `regex-lite` (the oracle, shared with the differential test:
//! filters/core/tests/regex_oracle/mod.rs) on an arbitrary pattern and haystacks: both accept
//! or reject the pattern and agree on every haystack, but for the documented deliberate
//! differences; never a panic, on any input.
//!
//! Input: one flag byte (bit 0: ignore case), the pattern (UTF-8, lossily), then haystacks,
//! each after a 0xFF byte (never in UTF-8, so it cannot end a pattern by accident). A haystack
//! may be any bytes: a non-UTF-8 one must never match.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../filters/core/tests/regex_oracle/mod.rs"]
mod regex_oracle;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.split(|&b| b == 0xFF);
    let pattern = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let mut haystacks: Vec<&[u8]> = parts.collect();
    // The pattern itself is a haystack that often matches.
    haystacks.push(pattern.as_bytes());
    if let Err(difference) = regex_oracle::compare(&pattern, flags & 1 == 1, &haystacks) {
        panic!("{difference}");
    }
});
