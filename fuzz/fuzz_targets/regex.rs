//! `sluice_core::regex` on an arbitrary pattern and haystacks: compiling and matching never
//! panic, and the engine agrees with itself where two spellings must mean the same:
//! - `(?:p)` matches exactly what `p` matches;
//! - `p` compiled case-insensitively matches exactly what `(?i)p` matches.
//!
//! No third-party oracle here: RE2 (which Envoy runs) and regex-lite part ways on corners of
//! the syntax, so the comparisons live in deterministic tests instead, against regex-lite on
//! ASCII (filters/core/tests/regex_differential.rs) and against Envoy itself
//! (integration/tests/regex_envoy.rs); a random run in CI cannot fail on a known quirk.
//!
//! Input: one flag byte (bit 0: ignore case), the pattern (UTF-8, lossily), then haystacks,
//! each after a 0xFF byte. A haystack may be any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::regex::Regex;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let ignore_case = flags & 1 == 1;
    let mut parts = rest.split(|&b| b == 0xFF);
    let pattern = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let mut haystacks: Vec<&[u8]> = parts.collect();
    // The pattern itself is a haystack that often matches.
    haystacks.push(pattern.as_bytes());
    let Ok(regex) = Regex::new(&pattern, ignore_case) else {
        return;
    };
    // Either may hit the nesting limit that `p` alone stays under: compare only when compiled.
    let wrapped = Regex::new(&format!("(?:{pattern})"), ignore_case).ok();
    let flagged = ignore_case
        .then(|| Regex::new(&format!("(?i){pattern}"), false).ok())
        .flatten();
    for haystack in haystacks {
        let answer = regex.is_match(haystack);
        if let Some(wrapped) = &wrapped {
            assert_eq!(wrapped.is_match(haystack), answer, "(?:{pattern:?}) on {haystack:?}");
        }
        if let Some(flagged) = &flagged {
            assert_eq!(flagged.is_match(haystack), answer, "(?i){pattern:?} on {haystack:?}");
        }
    }
});
