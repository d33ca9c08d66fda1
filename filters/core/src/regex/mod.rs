//! A small regex engine for Istio/Envoy `safe_regex` matches: RE2 syntax, full match,
//! linear time, no allocation per match, and little code in a .wasm module.
//!
//! [`Regex::new`] parses a pattern (`parse`: RE2's syntax as Envoy accepts it, Perl flags on,
//! without Unicode classes) straight into a Thompson program (`compile`: no syntax tree, to
//! keep the module small), and [`Regex::is_match`] runs that program as a Pike VM (`vm`) over
//! the whole haystack.
//!
//! Why our own: the filters need only "does this whole value match", on header values and
//! paths, with Envoy's byte semantics (below), which no Rust engine offers for RE2 syntax. `regex-lite` 0.1.9 (the smallest maintained engine) costs ~48 KB of the suite module;
//! this engine costs a fraction of it, which is what puts the module under its 256,000 B budget
//! (see `matching`'s module doc for the figures). `regex-lite` remains the test oracle: a
//! differential test and a fuzz target compare the two on ASCII patterns and inputs, and
//! integration/tests/regex_envoy.rs compares the engine with Envoy's own `safe_regex` on the
//! same patterns, non-ASCII ones included.
//!
//! Semantics, and where they differ from RE2 or from `regex-lite`:
//! - Full match: the program starts at the first character and accepts only at the end, as
//!   `^(?:pattern)$`.
//! - Bytes, as Envoy: Envoy 1.40's `safe_regex` runs RE2 in Latin-1 mode (measured through
//!   Envoy: `.` does not match `é`, `..` does, `a.` matches `a\xFF`, `\x{E9}` does not match
//!   the UTF-8 `é`, and `\x{100}` is refused). So here too a character is a byte, in the
//!   pattern and in the haystack: any header value can match, UTF-8 or not, and a non-ASCII
//!   literal in a pattern stands for its UTF-8 bytes (`é+` repeats its last byte, as in Envoy).
//!   An escape above `\xFF` (or `\377`) is an error.
//! - ASCII only: `\d`, `\w`, `\s`, `\b` and the POSIX classes are ASCII, and `(?i)` folds only
//!   ASCII letters (Envoy does not fold `É`/`é` either). `\pN`, `\p{Greek}` and `\C` are
//!   rejected with an error.
//! - RE2 where `regex-lite` differs (each checked by the differential test's oracle,
//!   filters/core/tests/regex_oracle): `\s` is `[\t\n\f\r ]` (no `\v`); a `{` that does not
//!   open a well-formed `{n}`, `{n,}`, `{n,m}` is a literal (`a{`, `a{,3}`, `a{01}`); counts
//!   above 1000, nested counts whose product exceeds 1000 (`(a{2}){600}`) and stacked operators
//!   (`a**`, `a*+`) are errors; a repetition right after a flag group repeats the atom before
//!   it (`a(?i)*` is `a*`); `\0` and `\012` are octal escapes; any escaped ASCII punctuation
//!   is itself (`\<` is `<`, not a word start); in a class, `[` is a literal (no nested classes
//!   or `&&`/`--`/`~~` set operations) and so is a `-` that cannot end a range (`[\w-.]`);
//!   `(?)` and repeated flags (`(?ii)`) are accepted; `\Q...\E` quotes; group names are ASCII
//!   word characters, digits first allowed; under `(?i)`, a negated Perl or POSIX class is
//!   folded, then negated (`(?i)[[:^upper:]]` matches no letter).
//! - Not supported (errors, as in RE2): backreferences, lookaround, flags other than `i`, `m`,
//!   `s`, `U`.
//!
//! Limits, checked when compiling: [`NEST_LIMIT`] open groups, and [`SIZE_LIMIT`] bytes of
//! program plus character ranges. A match takes O(len(haystack) x len(program)), so the size
//! limit bounds the CPU one request can cost for any config.

use std::cell::RefCell;
use std::fmt;

mod compile;
mod parse;
#[cfg(test)]
mod tests;
mod vm;

/// Upper bound, in bytes, on one compiled regex (instructions plus class ranges). A match costs
/// the haystack length times the program size, so this bounds per-request CPU for any config.
/// 64 KiB admits every realistic header/uri pattern (e.g. a 200-alternative list of versions).
pub const SIZE_LIMIT: usize = 64 * 1024;

/// Nesting depth limit on groups: deep enough for any hand-written pattern, and a bound on the
/// recursion of the parser and compiler.
pub const NEST_LIMIT: u32 = 64;

/// Why a pattern was refused: a short message and, for syntax errors, the byte offset in the
/// pattern where the problem starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: &'static str,
    offset: Option<usize>,
}

impl Error {
    fn at(message: &'static str, offset: usize) -> Self {
        Self {
            message,
            offset: Some(offset),
        }
    }

    fn too_big() -> Self {
        Self {
            message: "compiled regex exceeds the 64 KiB size limit",
            offset: None,
        }
    }

    /// The problem, e.g. `unclosed group`.
    pub fn message(&self) -> &'static str {
        self.message
    }

    /// Byte offset in the pattern (`None` for the size limit, which has no single place).
    pub fn offset(&self) -> Option<usize> {
        self.offset
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(offset) => write!(f, "{} at offset {offset}", self.message),
            None => f.write_str(self.message),
        }
    }
}

impl std::error::Error for Error {}

/// A compiled pattern that answers "does the whole haystack match".
///
/// Holds its match scratch space in a `RefCell`, so it is `Send` but not `Sync`: a proxy-wasm
/// VM is single-threaded, and each worker compiles its own configs.
#[derive(Clone)]
pub struct Regex {
    pattern: Box<str>,
    program: Vec<compile::Inst>,
    pool: Vec<parse::Range>,
    scratch: RefCell<vm::Scratch>,
}

impl Regex {
    /// Compiles `pattern` for a full match; `ignore_case` is an initial `(?i)`.
    pub fn new(pattern: &str, ignore_case: bool) -> Result<Self, Error> {
        let compile::Program { insts, pool } = parse::parse(pattern, ignore_case)?;
        let scratch = vm::Scratch::new(insts.len());
        Ok(Self {
            pattern: pattern.into(),
            program: insts,
            pool,
            scratch: RefCell::new(scratch),
        })
    }

    /// Whether all of `haystack` matches, byte by byte (see the module doc).
    pub fn is_match(&self, haystack: &[u8]) -> bool {
        match self.scratch.try_borrow_mut() {
            Ok(mut scratch) => vm::full_match(&self.program, &self.pool, &mut scratch, haystack),
            // Only a re-entrant call could find it borrowed; stay correct with fresh space.
            Err(_) => {
                let mut scratch = vm::Scratch::new(self.program.len());
                vm::full_match(&self.program, &self.pool, &mut scratch, haystack)
            }
        }
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Regex").field(&self.pattern).finish()
    }
}
