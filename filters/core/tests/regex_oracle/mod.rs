//! The differential oracle of `sluice_core::regex`: `regex-lite` 0.1.9, run on `^(?:p)$`.
//! Shared by tests/regex_differential.rs and fuzz/fuzz_targets/regex_differential.rs.
//!
//! Compared on ASCII only (see [`compare`]): both must accept or reject the same patterns and
//! give the same `is_match` on every accepted one, except for the deliberate differences below, where our engine follows RE2 (what Envoy's
//! `safe_regex` runs) and `regex-lite` does not:
//! - syntax only RE2 accepts: a `{` that opens no well-formed repetition is a literal (`a{`,
//!   `a{,3}`, `\b{a`), `(?)`, a flag twice (`(?ii)`), octal `\0`/`\012`, `\Q...\E`, `\<`
//!   and `\>` as literals (also in a class), `[` as a literal in a class (`[[]`, `[a[b]`),
//!   `&&`/`--`/`~~` as literals in a class, `-` after a class escape in a class (`[\w-.]`:
//!   RE2's Perl mode reads a literal `-`);
//! - syntax only `regex-lite` accepts: stacked repetitions (`a**`, `a*+`), counts above 1000
//!   (also as a nested product, `(a{2}){600}`), flags `x`/`R`/`u`, `\u`/`\U` escapes,
//!   `.`/`[`/`]` in group names, `[--\s]` and `[]-.]` (RE2: ranges, here invalid); and our
//!   limits (nesting 64, 64 KiB compiled) are tighter;
//! - meaning: a repetition right after a flag group repeats the atom before it (`a(?i)*` is
//!   `a*`; `regex-lite` repeats the empty flag group, and accepts `(?i)*` at the start),
//!   `[--z]` is the range `-`..`z` (`regex-lite` reads it otherwise), `\<`/`\>` are literals
//!   (`regex-lite`: word start/end), `\b{start}` is `\b` then a literal, `{01}` and `{ 6}`
//!   are literal text, RE2's `\s` has no `\v`, and under `(?i)` a negated POSIX class is
//!   folded before it is negated (`(?i)[[:^upper:]]` matches no letter);
//! - a regex-lite 0.1.9 bug: under `(?i)` it loses the other case of `[:upper:]`/`[:lower:]` in
//!   some classes (`(?i)[a[:punct:][:upper:]]` misses `b`; RE2 and ours match it).

use sluice_core::regex::Regex;

/// What one comparison exercised, for the callers' coverage counts.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Both engines accepted the pattern.
    pub accepted: bool,
    /// Both rejected it.
    pub rejected: bool,
    /// The engines disagreed on a deliberate difference (nothing compared).
    pub excused: bool,
    /// Haystacks compared (both accepted).
    pub compared: usize,
    /// Of those, how many matched.
    pub matched: usize,
}

/// Compares both engines on `pattern` and `haystacks`; `Err` describes a real difference.
///
/// Only where both read characters alike: on ASCII. Our engine reads bytes (Latin-1, as
/// Envoy's RE2), `regex-lite` reads UTF-8 characters, so a non-ASCII pattern or haystack is
/// only run through ours (it must not panic) and not compared; integration/tests/regex_envoy.rs
/// compares those with Envoy itself.
pub fn compare(pattern: &str, ignore_case: bool, haystacks: &[&[u8]]) -> Result<Outcome, String> {
    let ours = Regex::new(pattern, ignore_case);
    if !pattern.is_ascii() {
        if let Ok(ours) = &ours {
            for &haystack in haystacks {
                ours.is_match(haystack);
            }
        }
        return Ok(Outcome::default());
    }
    let theirs = regex_lite::RegexBuilder::new(pattern)
        .case_insensitive(ignore_case)
        .build();
    let mut outcome = Outcome::default();
    match (&ours, &theirs) {
        (Err(_), Err(_)) => {
            outcome.rejected = true;
            return Ok(outcome);
        }
        (Ok(_), Err(e)) if re2_only_syntax(pattern, &e.to_string()) => {
            outcome.excused = true;
            return Ok(outcome);
        }
        (Err(e), Ok(_)) if regex_lite_only_syntax(pattern, e) => {
            outcome.excused = true;
            return Ok(outcome);
        }
        (Ok(_), Err(e)) => return Err(format!("{pattern:?}: we accept, regex-lite says {e}")),
        (Err(e), Ok(_)) => return Err(format!("{pattern:?}: regex-lite accepts, we say {e}")),
        (Ok(_), Ok(_)) => outcome.accepted = true,
    }
    let Ok(ours) = ours else { unreachable!() };
    let Ok(anchored) = regex_lite::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .case_insensitive(ignore_case)
        .build()
    else {
        return Err(format!("{pattern:?}: regex-lite rejects it once anchored"));
    };
    for &haystack in haystacks {
        let got = ours.is_match(haystack);
        let Some(text) = std::str::from_utf8(haystack).ok().filter(|t| t.is_ascii()) else {
            continue;
        };
        let want = anchored.is_match(text);
        if got != want && !different_meaning(pattern, ignore_case, text) {
            return Err(format!(
                "{pattern:?} (ignore_case {ignore_case}) on {text:?}: ours {got}, regex-lite {want}"
            ));
        }
        outcome.compared += 1;
        outcome.matched += usize::from(got);
    }
    Ok(outcome)
}

/// We accept, `regex-lite` rejects: only for syntax RE2 accepts and `regex-lite` does not.
fn re2_only_syntax(pattern: &str, theirs: &str) -> bool {
    let brace = pattern.contains('{')
        && [
            "counted repetition",
            "decimal number",
            "repetition quantifier",
        ]
        .iter()
        .any(|m| theirs.contains(m));
    let octal = (0..8).any(|d| pattern.contains(&format!("\\{d}"))) && theirs.contains("backref");
    brace
        || octal
        || (pattern.contains("(?)") && theirs.contains("empty flag"))
        || theirs.contains("duplicate inline flag")
        // regex-lite's 10 MB program limit, reached where RE2 reads literal text (`x{099}`).
        || theirs.contains("size limit")
        || (pattern.contains("\\b{") && theirs.contains("word boundary"))
        || (dash_range(pattern) && theirs.contains("range"))
        || ((pattern.contains("\\Q") || pattern.contains("\\<") || pattern.contains("\\>"))
            && theirs.contains("escape"))
        || theirs.contains("must start and end with a single character")
        || theirs.contains("nested character class")
        || theirs.contains("character class intersection")
        || theirs.contains("character class difference")
        || theirs.contains("character class symmetric difference")
        || (theirs.contains("group name") && (pattern.contains("(?P<") || pattern.contains("(?<")))
        || (pattern.contains("\\x{") && theirs.contains("hexadecimal"))
}

/// We reject, `regex-lite` accepts: only RE2 rules and our own limits.
fn regex_lite_only_syntax(pattern: &str, ours: &sluice_core::regex::Error) -> bool {
    match ours.message() {
        "repeated repetition operator"
        | "repetition count above 1000"
        | "nested repetition above 1000"
        | "nesting too deep" => true,
        "nothing to repeat" => repeated_flag_group(pattern),
        // `[--\s]`: RE2 reads a range from `-` whose end is a class (an error).
        // `[]-.]`: RE2 reads the range `]`..`.`, reversed (an error).
        "invalid class range" => {
            dash_range(pattern) || pattern.contains("[]-") || pattern.contains("[^]-")
        }
        "invalid flag" => pattern.contains("(?") && pattern.contains(['x', 'R', 'u']),
        "invalid escape" | "invalid escape in class" => {
            pattern.contains("\\u") || pattern.contains("\\U")
        }
        "invalid group name" => {
            pattern.contains('.') || pattern.contains('[') || pattern.contains(']')
        }
        _ => ours.offset().is_none(), // the size limit
    }
}

/// Both accept but the meaning differs on this haystack, for a documented reason.
fn different_meaning(pattern: &str, ignore_case: bool, text: &str) -> bool {
    let flag_group = repeated_flag_group(pattern);
    let looks = ["\\<", "\\>", "\\b{"].iter().any(|s| pattern.contains(s));
    // `{ 6}`, `{0\x0B}`: regex-lite skips (Unicode) whitespace in a count; RE2 reads literal text.
    let spaced_count = pattern.split('{').skip(1).any(|after| {
        after.split_once('}').is_some_and(|(count, _)| {
            count.contains(|c: char| c.is_whitespace())
                && count
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c.is_whitespace())
        })
    });
    // `{01}`, `{1,02}`: RE2 reads a count with a leading zero as literal text.
    let zero_count = pattern
        .as_bytes()
        .windows(3)
        .any(|w| matches!(w, [b'{' | b',', b'0', d] if d.is_ascii_digit()));
    let vertical_tab =
        text.contains('\x0B') && (pattern.contains("\\s") || pattern.contains("\\S"));
    // Under `(?i)`, RE2 folds a negated POSIX case class before negating it; and regex-lite
    // 0.1.9 loses the other case of `[:upper:]`/`[:lower:]` in some classes (`(?i)[a[:punct:]
    // [:upper:]]` misses `b`; RE2, Envoy and ours match it).
    let folded_posix_case = (ignore_case || pattern.contains('i'))
        && [":upper:", ":lower:"].iter().any(|c| pattern.contains(c));
    flag_group
        || dash_range(pattern)
        || spaced_count
        || looks
        || zero_count
        || vertical_tab
        || folded_posix_case
}

/// A flag group `(?flags)` (or an empty `\Q\E`) directly followed by a repetition operator.
fn repeated_flag_group(pattern: &str) -> bool {
    let bytes = pattern.as_bytes();
    let repeated = |end: usize| matches!(bytes.get(end), Some(b'*' | b'+' | b'?' | b'{'));
    pattern.contains("\\Q")
        || (0..bytes.len()).any(|start| {
            bytes.get(start..start + 2) == Some(b"(?")
                && bytes
                    .get(start + 2..)
                    .and_then(|rest| rest.iter().position(|&b| !b"imsU-".contains(&b)))
                    .is_some_and(|len| {
                        bytes.get(start + 2 + len) == Some(&b')') && repeated(start + 3 + len)
                    })
        })
}

/// `[--z]`: RE2 reads the range `-`..`z` (Perl mode); regex-lite reads the dashes otherwise.
fn dash_range(pattern: &str) -> bool {
    pattern.contains("[--") || pattern.contains("[^--")
}
