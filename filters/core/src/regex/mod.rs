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
//! Limits, checked when compiling: [`NEST_LIMIT`] open groups and [`SIZE_LIMIT`] bytes of
//! program plus character ranges; a regex in a filter config also has at most
//! [`PROGRAM_LIMIT`] instructions ([`crate::matching::compile_regex`]). A match takes at most
//! `len(program) x (len(haystack) + 1)` steps (one step: one live instruction carried over one
//! byte), so the program limit bounds the CPU one match can cost for any config.
//!
//! Per request, the matches of one filter share a budget of [`REQUEST_STEP_BUDGET`] steps
//! ([`Regex::is_match_within_budget`]; [`start_request`] refills it, which
//! [`crate::matching::Lookup::new`] does once per request). A match that would exceed it
//! answers no match, and [`take_budget_exceeded`] tells the glue, which counts it
//! (`sluice.<filter>.regex_budget_exceeded`) and logs at most once per 10 s per worker. The
//! budget is one worst-case match, a [`PROGRAM_LIMIT`] program over [`MAX_HEADERS_BYTES`] of
//! header, so no single pattern a config can hold is ever cut short on any header Envoy
//! accepts; several large matches on one request are.
//!
//! # Program size, in Envoy's units and ours
//!
//! Envoy refuses a `safe_regex` whose RE2 "program size" (`RE2::ProgramSize()`, the number of
//! instructions of the compiled RE2 program) exceeds the runtime value
//! `re2.max_program_size.error_level`, default 100. [`PROGRAM_LIMIT`] is the same number in
//! this engine's instructions (`Regex::program_len`), measured against RE2's through Envoy 1.40
//! (its error message prints the size when the runtime limit is set to 0): RE2 counts 3 more
//! for a plain pattern (`a` 5 vs 2, `abc` 7 vs 4, `(?:.*){30}z` 94 vs 92,
//! `[a-z]{3,20}\.example\.com` 53 vs 50, `/api/v[0-9]+/users/[^/]+` 22 vs 18) and 2 more per
//! capturing group (`(a)(b)` 10 vs 3); this engine counts more where RE2 folds an alternation
//! of single characters into one class (`a|b|c|d|e|f` 5 vs 17) and one jump more per
//! alternative (`abc|def|ghi|jkl` 16 vs 19) or per star (`a*b*c*` 9 vs 10). So the limit is
//! within a few instructions of Envoy's for patterns made of literals, classes and
//! repetitions; it is stricter than Envoy for long alternations (write `[abc]` rather than
//! `a|b|c`), and more lenient for patterns with many capturing groups.

use std::cell::{Cell, RefCell};
use std::fmt;

mod compile;
mod parse;
#[cfg(test)]
mod tests;
mod vm;

/// Upper bound, in bytes, on one compiled regex (instructions plus class ranges). A match costs
/// the haystack length times the program size, so this bounds per-request CPU for any config.
/// The engine's own memory bound; a regex in a filter config is held to the much smaller
/// [`PROGRAM_LIMIT`] as well.
pub const SIZE_LIMIT: usize = 64 * 1024;

/// Nesting depth limit on groups: deep enough for any hand-written pattern, and a bound on the
/// recursion of the parser and compiler.
pub const NEST_LIMIT: u32 = 64;

/// Upper bound on the instructions of one regex in a filter config
/// ([`crate::matching::compile_regex`] refuses longer programs; the engine itself only holds
/// [`SIZE_LIMIT`]): Envoy's default RE2 program size limit
/// (`re2.max_program_size.error_level`, 100), in this engine's instructions (see the module
/// doc for how the two compare).
pub const PROGRAM_LIMIT: usize = 100;

/// Envoy's default bound on a request's headers (`max_request_headers_kb`, 60 KiB): no header
/// value a filter sees is longer.
pub const MAX_HEADERS_BYTES: usize = 60 * 1024;

/// Match steps one filter may spend on one request's regexes: one worst-case match, a
/// [`PROGRAM_LIMIT`] program over [`MAX_HEADERS_BYTES`] (6,144,100 steps).
pub const REQUEST_STEP_BUDGET: u64 = PROGRAM_LIMIT as u64 * (MAX_HEADERS_BYTES as u64 + 1);

thread_local! {
    /// Steps left for the current request (a proxy-wasm VM is single-threaded).
    static BUDGET: Cell<u64> = const { Cell::new(REQUEST_STEP_BUDGET) };
    /// Matches cut short by the budget since the glue last asked.
    static EXCEEDED: Cell<u32> = const { Cell::new(0) };
}

/// Refills the per-request step budget ([`REQUEST_STEP_BUDGET`]); called once per request
/// (by [`crate::matching::Lookup::new`]).
pub fn start_request() {
    BUDGET.with(|b| b.set(REQUEST_STEP_BUDGET));
}

/// How many budgeted matches answered "no match" because the budget ran out, since the last
/// call (which resets the count).
pub fn take_budget_exceeded() -> u32 {
    EXCEEDED.with(|e| e.replace(0))
}

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

    /// Whether all of `haystack` matches, byte by byte (see the module doc). Unbudgeted: for
    /// tests and the builder; the request path uses [`Regex::is_match_within_budget`].
    pub fn is_match(&self, haystack: &[u8]) -> bool {
        let mut unlimited = u64::MAX;
        self.run(haystack, &mut unlimited).unwrap_or(false)
    }

    /// [`Regex::is_match`] spending the current request's step budget ([`start_request`]):
    /// when the match would exceed what is left, it stops there, answers no match, and counts
    /// it for [`take_budget_exceeded`]; the budget is then empty for the rest of the request.
    pub fn is_match_within_budget(&self, haystack: &[u8]) -> bool {
        let mut budget = BUDGET.with(Cell::get);
        let result = self.run(haystack, &mut budget);
        BUDGET.with(|b| b.set(budget));
        result.unwrap_or_else(|| {
            EXCEEDED.with(|e| e.set(e.get().saturating_add(1)));
            false
        })
    }

    /// The most steps a match on `haystack_len` bytes can take: `program_len x (len + 1)`.
    pub fn worst_case_steps(&self, haystack_len: usize) -> u64 {
        (self.program.len() as u64).saturating_mul(haystack_len as u64 + 1)
    }

    /// `None` when `budget` ran out (then 0).
    fn run(&self, haystack: &[u8], budget: &mut u64) -> Option<bool> {
        match self.scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                vm::full_match(&self.program, &self.pool, &mut scratch, haystack, budget)
            }
            // Only a re-entrant call could find it borrowed; stay correct with fresh space.
            Err(_) => {
                let mut scratch = vm::Scratch::new(self.program.len());
                vm::full_match(&self.program, &self.pool, &mut scratch, haystack, budget)
            }
        }
    }

    /// The number of instructions of the compiled program.
    pub fn program_len(&self) -> usize {
        self.program.len()
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
