//! Unit tests per syntax feature and per error. The differential test against `regex-lite`
//! is in filters/core/tests/regex_differential.rs.

use super::{Error, Regex};

fn re(pattern: &str) -> Regex {
    Regex::new(pattern, false).unwrap_or_else(|e| panic!("{pattern:?}: {e}"))
}

fn yes(pattern: &str, haystacks: &[&str]) {
    let r = re(pattern);
    for h in haystacks {
        assert!(r.is_match(h.as_bytes()), "{pattern:?} should match {h:?}");
    }
}

fn no(pattern: &str, haystacks: &[&str]) {
    let r = re(pattern);
    for h in haystacks {
        assert!(
            !r.is_match(h.as_bytes()),
            "{pattern:?} should not match {h:?}"
        );
    }
}

/// Whether `pattern` matches the bytes `haystack` (for haystacks that are not UTF-8).
fn matches_bytes(pattern: &str, haystack: &[u8]) -> bool {
    re(pattern).is_match(haystack)
}

fn err(pattern: &str) -> Error {
    match Regex::new(pattern, false) {
        Ok(_) => panic!("{pattern:?} should be rejected"),
        Err(e) => e,
    }
}

fn err_at(pattern: &str, message: &str, offset: usize) {
    let e = err(pattern);
    assert_eq!(
        (e.message(), e.offset()),
        (message, Some(offset)),
        "{pattern:?}: {e}"
    );
}

#[test]
fn literals_are_a_full_match() {
    yes("abc", &["abc"]);
    no("abc", &["", "ab", "abcd", "xabc", "ABC"]);
    yes("", &[""]);
    no("", &["a"]);
    yes("é€😀", &["é€😀"]);
    no("é", &["e", "é\n"]);
}

/// Envoy's RE2 reads patterns and values as Latin-1, one character per byte; so does the
/// engine (integration/tests/regex_envoy.rs checks these through Envoy).
#[test]
fn characters_are_bytes_as_in_envoy() {
    assert!(matches_bytes(".*", b"a\xff"));
    assert!(matches_bytes("a.", b"a\xff"));
    assert!(matches_bytes("(?s).", b"\xc3"));
    assert!(matches_bytes(r"\xff", b"\xff"));
    assert!(matches_bytes(r"\x{e9}", b"\xe9"));
    assert!(matches_bytes(r"\351", b"\xe9"));
    // `é` is two characters: its UTF-8 bytes.
    no(".", &["é"]);
    yes("..", &["é"]);
    no(r"\x{e9}", &["é"]);
    yes("é", &["é"]);
    // A repetition takes the last byte of a multi-byte literal.
    yes("é+", &["é"]);
    assert!(matches_bytes("é+", b"\xc3\xa9\xa9"));
    no("é+", &["éé"]);
    yes("(?:é)+", &["éé"]);
}

#[test]
fn escapes_of_meta_and_control_characters() {
    yes(r"\.\*\+\?\(\)\[\]\{\}\|\^\$\\", &[r".*+?()[]{}|^$\"]);
    yes(r"\n\t\r\f\v\a", &["\n\t\r\x0C\x0B\x07"]);
    assert!(matches_bytes(r"\x41\x7F\x{e9}\xFF", b"A\x7F\xe9\xff"));
    yes(r"\0\012\101", &["\0\nA"]);
    // RE2: any escaped ASCII punctuation is itself (`\<` is not a word start here).
    yes(r"\<\>\_\ \-\#", &["<>_ -#"]);
}

#[test]
fn quoted_text_is_literal_and_a_repetition_takes_its_last_char() {
    yes(r"\Qa.b*\Ec", &["a.b*c"]);
    no(r"\Qa.b*\Ec", &["axb*c"]);
    yes(r"\Qab\E+", &["abbb"]);
    no(r"\Qab\E+", &["abab"]);
    yes(r"x\Q(", &["x("]);
}

#[test]
fn dot_and_the_s_flag() {
    yes(".", &["a", "\r"]);
    assert!(matches_bytes(".", b"\xff"));
    no(".", &["\n", "", "ab", "é"]);
    yes("(?s).", &["\n"]);
    yes("(?s:.)(?-s:.)", &["\na"]);
    no("(?s:.)(?-s:.)", &["a\n"]);
}

#[test]
fn classes_ranges_and_negation() {
    yes("[abc]", &["a", "b", "c"]);
    no("[abc]", &["d", ""]);
    yes("[a-cx-z]+", &["abxz"]);
    no("[a-cx-z]", &["d", "w"]);
    yes("[^a-c]", &["d", "\n"]);
    yes("[^a-c]{2}", &["é"]);
    no("[^a-c]", &["a", "c"]);
    yes("[]a]", &["]", "a"]);
    yes("[^]a]", &["b"]);
    no("[^]a]", &["]"]);
    yes("[a-]", &["-", "a"]);
    yes("[-a]", &["-"]);
    yes("[a-b-c]", &["-", "c", "b"]);
    yes(r"[\]\\\-]", &["]", "\\", "-"]);
    yes("[[]", &["["]);
    yes("[a[:b]", &[":", "["]);
    assert!(matches_bytes(r"[\x{e9}-\x{ea}]", b"\xea"));
    no(r"[\x{e9}-\x{ea}]", &["é"]);
    // A non-ASCII character in a class is its bytes, each a member.
    yes("[é]{2}", &["é"]);
    no("[é]", &["é"]);
    yes(r"[\n]", &["\n"]);
}

#[test]
fn perl_classes_are_ascii() {
    yes(r"\d\D\w\W\s\S", &["1a_ \tx"]);
    no(r"\d", &["a", "١"]);
    no(r"\w", &["é", "-"]);
    yes(r"\W", &["-"]);
    yes(r"\W\W", &["é"]);
    yes(r"\s", &[" ", "\t", "\n", "\r", "\x0C"]);
    // RE2's \s has no \v (regex-lite's has).
    no(r"\s", &["\x0B"]);
    yes(r"[\d_]+", &["1_2"]);
    yes(r"[^\D]", &["5"]);
    no(r"[^\D]", &["x"]);
    yes(r"[\W\d]", &["-", "5"]);
    no(r"[\W\d]", &["a"]);
}

#[test]
fn posix_classes() {
    yes("[[:alpha:]]+", &["aZ"]);
    no("[[:alpha:]]", &["1"]);
    yes("[[:^alpha:]]+", &["1", "é"]);
    yes("[[:digit:][:upper:]]+", &["1A"]);
    yes("[[:space:]]", &["\x0B"]);
    yes("[[:punct:]]+", &["!/:@[`{~"]);
    yes("[[:xdigit:]]+", &["09afAF"]);
    no("[[:xdigit:]]", &["g"]);
    yes("[[:word:]]", &["_"]);
    yes("[[:cntrl:]]", &["\x7F", "\0"]);
    yes("[[:blank:]]", &["\t"]);
    yes("[[:ascii:]]", &["\x7F"]);
    no("[[:ascii:]]", &["é"]);
    yes("[[:graph:]]", &["~"]);
    no("[[:graph:]]", &[" "]);
    yes("[[:print:]]", &[" "]);
    yes("[[:lower:][:alnum:]]", &["a", "1"]);
}

#[test]
fn anchors_without_and_with_multi_line() {
    yes("^abc$", &["abc"]);
    yes(r"\Aabc\z", &["abc"]);
    // Without (?m), `$` is the end of the text (RE2), not before a final newline.
    no("abc$\n", &["abc\n"]);
    no("a^b", &["ab"]);
    no("a\n^b", &["a\nb"]);
    yes("(?m)a\n^b", &["a\nb"]);
    no("(?m)a\n^b", &["a\n b"]);
    yes("(?m)a$\n^b", &["a\nb"]);
    yes("(?m)^$", &[""]);
    yes("(?m)a\n^", &["a\n"]);
    no(r"(?m)a\z\n", &["a\n"]);
    yes("(?m:a$)\n", &["a\n"]);
}

#[test]
fn word_boundaries_are_ascii() {
    yes(r"\bab\b", &["ab"]);
    yes(r"a\b-", &["a-"]);
    no(r"a\bb", &["ab"]);
    yes(r"a\Bb", &["ab"]);
    no(r"a\B-", &["a-"]);
    // `é` is not an ASCII word character: there is a boundary between `a` and `é`.
    yes(r"a\bé", &["aé"]);
    yes(r"\B", &[""]);
    no(r"\b", &[""]);
}

#[test]
fn groups_names_and_alternation() {
    yes("(ab)+", &["abab"]);
    yes("(?:ab|cd)+", &["abcdab"]);
    no("(?:ab|cd)+", &["abc"]);
    yes("(?P<x>a)(?<y>b)", &["ab"]);
    yes("(?P<name_1>a)", &["a"]);
    yes("a|", &["a", ""]);
    yes("|a", &["a", ""]);
    yes("()", &[""]);
    yes("(|)", &[""]);
    yes("a(|b)c", &["ac", "abc"]);
    yes("a|b|c", &["a", "b", "c"]);
    no("a|b|c", &["ab"]);
    yes("x(?:)y", &["xy"]);
}

#[test]
fn flags_scope_and_negation() {
    yes("(?i)abc", &["AbC"]);
    yes("a(?i)b", &["aB"]);
    no("a(?i)b", &["AB"]);
    yes("(?i:a)b", &["Ab"]);
    no("(?i:a)b", &["AB"]);
    yes("(?i)a(?-i)b", &["Ab"]);
    no("(?i)a(?-i)b", &["AB"]);
    // Flags last to the end of the group, across `|`.
    yes("(?:(?i)a|b)", &["B"]);
    no("(?:(?i)a)B", &["Ab", "ab"]);
    yes("(?ims-U)a", &["A"]);
    yes("(?U)a+?", &["aa"]);
    yes("(?)a", &["a"]);
    yes("(?sm:.$)", &["\n"]);
    // RE2: a repetition after a flag group repeats the atom before the group.
    yes("ba(?i)*", &["b", "baa"]);
    no("ba(?i)*", &["bA"]);
    yes("a*(?s)+", &["", "aa"]);
    yes(r"a\Q\E{2}", &["aa"]);
}

#[test]
fn case_folding_is_ascii_on_literals_and_classes() {
    let r = Regex::new("[a-c]x[^d]", true).unwrap();
    assert!(r.is_match(b"BXe"));
    assert!(!r.is_match(b"BXD"), "a negated class excludes both cases");
    assert!(Regex::new("é", true).unwrap().is_match("é".as_bytes()));
    assert!(!Regex::new("é", true).unwrap().is_match("É".as_bytes()));
    yes("(?i)[[:upper:]]", &["a", "A"]);
    no("(?i)[[:^upper:]]", &["a", "A"]);
    yes(r"(?i)\W", &["-"]);
    no(r"(?i)\W", &["k", "K"]);
    // Only ASCII: K does not fold to U+212A KELVIN SIGN (RE2 would).
    no("(?i)k", &["\u{212A}"]);
    let r = Regex::new("(?-i)a", true).unwrap();
    assert!(!r.is_match(b"A"));
}

#[test]
fn repetitions_greedy_lazy_and_counted() {
    yes("a*", &["", "aaa"]);
    yes("a+", &["a", "aaa"]);
    no("a+", &[""]);
    yes("a?b", &["b", "ab"]);
    no("a?b", &["aab"]);
    yes("a*?b+?c??", &["aabbc", "b"]);
    yes("a{3}", &["aaa"]);
    no("a{3}", &["aa", "aaaa"]);
    yes("a{2,}", &["aa", "aaaaa"]);
    no("a{2,}", &["a"]);
    yes("a{2,3}", &["aa", "aaa"]);
    no("a{2,3}", &["a", "aaaa"]);
    yes("a{0}b", &["b"]);
    yes("a{0,1}b{1,}?", &["ab", "bb"]);
    yes("(?:ab){2}", &["abab"]);
    yes("[0-9]{1,3}(?:\\.[0-9]{1,3}){3}", &["10.0.0.255"]);
    no("[0-9]{1,3}(?:\\.[0-9]{1,3}){3}", &["10.0.0", "1000.0.0.1"]);
    yes("a{1000}", &[&"a".repeat(1000)]);
    // Empty loops terminate.
    yes("(a*)*b", &["b", "aab"]);
    yes("(a|)+", &["", "aa"]);
    yes("(?:^)*a", &["a"]);
    yes(r"\b+a", &["a"]);
}

#[test]
fn a_brace_that_is_not_a_counted_repetition_is_literal() {
    yes("a{", &["a{"]);
    yes("a{,3}", &["a{,3}"]);
    yes("a{x}", &["a{x}"]);
    yes("a{1", &["a{1"]);
    yes("a{01}", &["a{01}"]);
    yes("{", &["{"]);
    yes("x{2}{", &["xx{"]);
}

#[test]
fn errors_name_the_problem_and_the_offset() {
    err_at("ab(c", "unclosed group", 2);
    err_at("(?:a", "unclosed group", 0);
    err_at("a)", "unmatched )", 1);
    err_at("*a", "nothing to repeat", 0);
    err_at("a|+", "nothing to repeat", 2);
    err_at("(?i)*", "nothing to repeat", 4);
    err_at("a|(?i)*", "nothing to repeat", 6);
    err_at("a(?i)**", "repeated repetition operator", 6);
    err_at("{2}", "nothing to repeat", 0);
    err_at("a**", "repeated repetition operator", 2);
    err_at("a*+", "repeated repetition operator", 2);
    err_at("a++", "repeated repetition operator", 2);
    err_at("a{2}{3}", "repeated repetition operator", 4);
    err_at("a??*", "repeated repetition operator", 3);
    err_at("a{1001}", "repetition count above 1000", 1);
    err_at("a{2,1001}", "repetition count above 1000", 1);
    err_at("a{3,2}", "repetition range max < min", 1);
    err_at("(?:a{2}){600}", "nested repetition above 1000", 8);
    err_at("x(a{1000}){1000}", "nested repetition above 1000", 10);
    err_at("[a", "unclosed class", 0);
    err_at("x[]", "unclosed class", 1);
    err_at("[a-", "unclosed class", 0);
    err_at("[z-a]", "invalid class range", 1);
    err_at(r"[a-\d]", "invalid class range", 1);
    err_at("[[:foo:]]", "unknown POSIX class", 1);
    err_at(r"a\1", "backreferences are not supported", 1);
    err_at(r"\8", "backreferences are not supported", 0);
    err_at(r"\pL", "Unicode classes are not supported", 0);
    err_at(r"x\p{Greek}", "Unicode classes are not supported", 1);
    err_at(r"[\P{L}]", "Unicode classes are not supported", 1);
    err_at("(?=a)", "lookaround is not supported", 0);
    err_at("a(?!b)", "lookaround is not supported", 1);
    err_at("(?<=a)", "lookaround is not supported", 0);
    err_at("(?<!a)", "lookaround is not supported", 0);
    err_at("(?P<>a)", "invalid group name", 4);
    err_at("(?<a-b>a)", "invalid group name", 3);
    err_at("(?P<n>a)(?P<n>b)", "duplicate group name", 12);
    err_at("(?P<n", "unclosed group name", 0);
    err_at("(?x)a", "invalid flag", 2);
    err_at("(?P=n)", "invalid flag", 2);
    err_at("(?i-)", "invalid flag", 4);
    err_at("(?-:a)", "invalid flag", 3);
    err_at("(?i", "unclosed group", 0);
    err_at(r"a\", "trailing backslash", 1);
    err_at(r"\q", "invalid escape", 0);
    err_at(r"\C", "invalid escape", 0);
    err_at(r"\Z", "invalid escape", 0);
    err_at(r"\é", "invalid escape", 0);
    err_at(r"[\b]", "invalid escape", 1);
    err_at(r"\xZZ", "invalid hex escape (at most \\xFF)", 0);
    err_at(r"\x{100}", "invalid hex escape (at most \\xFF)", 0);
    err_at(r"a\x{110000}", "invalid hex escape (at most \\xFF)", 1);
    err_at(r"\x{}", "invalid hex escape (at most \\xFF)", 0);
    err_at(r"\x{41", "invalid hex escape (at most \\xFF)", 0);
    err_at(r"\400", "invalid octal escape (at most \\377)", 0);
    assert_eq!(err("ab(c").to_string(), "unclosed group at offset 2");
}

#[test]
fn nesting_and_size_are_limited() {
    let deep = format!("{}a{}", "(".repeat(64), ")".repeat(64));
    assert!(Regex::new(&deep, false).is_ok());
    let deeper = format!("{}a{}", "(".repeat(65), ")".repeat(65));
    err_at(&deeper, "nesting too deep", 64);
    // 1000 copies of a 1000-copy class would be gigabytes: refused while compiling.
    let e = err(&"(?:[a-z]{30}){30}".repeat(8));
    assert_eq!(e.offset(), None, "{e}");
    assert!(e.to_string().contains("size limit"), "{e}");
    // A long pattern of plain text is limited too.
    assert!(Regex::new(&"a".repeat(100_000), false).is_err());
    assert!(Regex::new(&"a".repeat(2_000), false).is_ok());
}

#[test]
fn matching_is_linear_on_hostile_input() {
    // Exponential for a backtracker; here 30 x 30 steps of a 60-instruction program.
    let r = re("(a?){30}a{30}");
    assert!(r.is_match("a".repeat(30).as_bytes()));
    assert!(!r.is_match("a".repeat(61).as_bytes()));
    let r = re("(x+x+)+y");
    assert!(!r.is_match("x".repeat(5_000).as_bytes()));
}

#[test]
fn clones_and_repeated_matches_share_nothing_stale() {
    let r = re("a[bc]*d");
    let c = r.clone();
    for _ in 0..3 {
        assert!(r.is_match(b"abcbd"));
        assert!(!r.is_match(b"abca"));
        assert!(c.is_match(b"ad"));
    }
    assert_eq!(format!("{r:?}"), "Regex(\"a[bc]*d\")");
    assert_eq!(r.as_str(), "a[bc]*d");
}
