//! Differential test of `sluice_core::regex` against `regex-lite` (the oracle, see
//! regex_oracle/mod.rs): thousands of patterns from a small grammar, each with many haystacks,
//! from a fixed-seed PRNG so that a failure reproduces.

#[path = "regex_oracle/grammar.rs"]
mod grammar;
mod regex_oracle;

use grammar::Rng;

#[test]
fn agrees_with_regex_lite_on_generated_patterns() {
    let mut rng = Rng(0x05EE_D0F5_A1CE);
    let mut totals = regex_oracle::Outcome::default();
    let mut excused = Vec::new();
    let mut patterns = 0;
    while patterns < 6_000 {
        let pattern = grammar::pattern(&mut rng);
        // regex-lite reads UTF-8 characters, our engine bytes: compared on ASCII (the oracle's
        // doc); the grammar's non-ASCII patterns go to integration/tests/regex_envoy.rs.
        if !pattern.is_ascii() {
            continue;
        }
        patterns += 1;
        let ignore_case = rng.below(4) == 0;
        let mut haystacks: Vec<Vec<u8>> = (0..40)
            .map(|_| grammar::haystack(&mut rng).into_bytes())
            .collect();
        haystacks.push(b"a\xff".to_vec());
        let refs: Vec<&[u8]> = haystacks.iter().map(Vec::as_slice).collect();
        let outcome = regex_oracle::compare(&pattern, ignore_case, &refs)
            .unwrap_or_else(|difference| panic!("{difference}"));
        totals.accepted |= outcome.accepted;
        totals.compared += outcome.compared;
        totals.matched += outcome.matched;
        if outcome.rejected {
            totals.rejected = true;
        }
        if outcome.excused {
            excused.push(pattern);
        }
    }
    // The grammar must exercise both answers, and stay clear of the excused differences
    // (it generates none of them), so every pattern is really compared.
    assert!(excused.is_empty(), "excused: {excused:?}");
    assert!(totals.compared > 100_000, "{totals:?}");
    assert!(totals.matched > 5_000, "{totals:?}");
}

#[test]
fn agrees_with_regex_lite_on_errors() {
    for pattern in [
        "(",
        ")",
        "a)",
        "(?:a",
        "[a",
        "[z-a]",
        "*",
        "a|*",
        "+a",
        r"\1",
        r"\pL",
        r"\p{Greek}",
        "(?=a)",
        "(?<!a)",
        "(?P<n>a)(?P<n>b)",
        "(?P<>a)",
        r"a\",
        r"\q",
        r"\Z",
        r"[\b]",
        "(?i-)",
        "(?-)",
        r"\xZ",
        r"\x{110000}",
        "[[:foo:]]",
        "a{3,2}",
    ] {
        let outcome = regex_oracle::compare(pattern, false, &[])
            .unwrap_or_else(|difference| panic!("{difference}"));
        assert!(
            outcome.rejected || outcome.excused,
            "{pattern:?}: {outcome:?}"
        );
    }
}

/// Each deliberate difference is really one (the oracle's excuses are not dead code) and our
/// side of it is RE2's.
#[test]
fn deliberate_differences_follow_re2() {
    use sluice_core::regex::Regex;
    let lite = |p: &str| regex_lite::Regex::new(&format!("^(?:{p})$"));
    // Syntax RE2 accepts, regex-lite rejects.
    for (pattern, haystack) in [
        ("a{", "a{"),
        ("a{,3}", "a{,3}"),
        ("(?)a", "a"),
        (r"\012", "\n"),
        (r"\Qa*\E", "a*"),
        ("[[]", "["),
    ] {
        assert!(lite(pattern).is_err(), "{pattern:?}");
        assert!(
            Regex::new(pattern, false)
                .unwrap()
                .is_match(haystack.as_bytes()),
            "{pattern:?}"
        );
    }
    // Syntax regex-lite accepts, RE2 rejects.
    for pattern in [
        "a**",
        "a*+",
        "a{1001}",
        "(?:a{2}){600}",
        "(?x)a",
        r"\u0041",
        "(?P<a.b>x)",
    ] {
        assert!(lite(pattern).is_ok(), "{pattern:?}");
        assert!(Regex::new(pattern, false).is_err(), "{pattern:?}");
    }
    // Same syntax, RE2's meaning.
    for (pattern, haystack) in [
        (r"\<a", "<a"),
        ("a{01}", "a{01}"),
        (r"\s", "\x0B"),
        ("(?i)[[:^upper:]]", "a"),
    ] {
        let ours = Regex::new(pattern, false)
            .unwrap()
            .is_match(haystack.as_bytes());
        assert_ne!(
            ours,
            lite(pattern).unwrap().is_match(haystack),
            "{pattern:?} on {haystack:?}"
        );
    }
}
