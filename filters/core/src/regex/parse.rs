//! Pattern text -> program: RE2's syntax (what Envoy's `safe_regex` accepts, Perl flags on)
//! without Unicode classes, read in one pass that emits the instructions as it goes (see
//! [`super::compile`]). Groups capture nothing: a match only answers yes or no.
//!
//! The pattern is read as Latin-1, one character per byte, as Envoy's RE2 reads it (see the
//! module doc of [`super`]): `é` in a pattern is the two characters of its UTF-8 bytes, and an
//! escape above `\xFF` is an error. Every character, literal or class, becomes a list of byte
//! ranges in the program's pool.

use super::compile::{Inst, Program};
use super::{Error, NEST_LIMIT};

/// Inclusive range of characters, i.e. of bytes (Latin-1). `u32`, so that range arithmetic
/// (`hi + 1`, complements) needs no overflow checks.
pub(super) type Range = (u32, u32);

/// The largest character: patterns and haystacks are bytes.
const MAX_CHAR: u32 = 0xFF;

/// RE2's bound on the counts of `{n,m}`, and on their product along a nesting (`(a{2}){600}`).
const MAX_REPEAT: u32 = 1000;

/// A zero-width assertion. Word and line tests look at bytes: both are ASCII, as in RE2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Look {
    /// `\A`, `^` without `(?m)`.
    Start,
    /// `\z`, `$` without `(?m)` (RE2's `$` is the end of the text, not before a final `\n`).
    End,
    /// `(?m)^`: start of the text or after `\n`.
    StartLine,
    /// `(?m)$`: end of the text or before `\n`.
    EndLine,
    /// `\b`
    WordBoundary,
    /// `\B`
    NotWordBoundary,
}

/// Flags in effect at a point of the pattern (`U`, greediness, does not change a yes/no answer).
#[derive(Debug, Clone, Copy)]
struct Flags {
    fold: bool,
    multi_line: bool,
    dot_nl: bool,
}

/// What a backslash sequence stands for.
enum Escape {
    Char(u32),
    /// A Perl class (`\d` ...) and whether it is negated (`\D` ...).
    Class(&'static [(u8, u8)], bool),
    Look(Look),
    /// `\Q`: literal text up to `\E` or the end.
    Quote,
}

const DIGIT: &[(u8, u8)] = &[(b'0', b'9')];
/// RE2's `\s`: `[\t\n\f\r ]`, without `\v` (POSIX `[[:space:]]` has it).
const SPACE: &[(u8, u8)] = &[(b'\t', b'\n'), (0x0C, b'\r'), (b' ', b' ')];
const WORD: &[(u8, u8)] = &[(b'0', b'9'), (b'A', b'Z'), (b'_', b'_'), (b'a', b'z')];

/// The POSIX classes of `[[:name:]]`, as RE2 defines them (ASCII). A table, not a `match`
/// on strings: smaller code.
const POSIX_CLASSES: [(&str, &[(u8, u8)]); 14] = [
    ("alnum", &[(b'0', b'9'), (b'A', b'Z'), (b'a', b'z')]),
    ("alpha", &[(b'A', b'Z'), (b'a', b'z')]),
    ("ascii", &[(0, 0x7F)]),
    ("blank", &[(b'\t', b'\t'), (b' ', b' ')]),
    ("cntrl", &[(0, 0x1F), (0x7F, 0x7F)]),
    ("digit", DIGIT),
    ("graph", &[(b'!', b'~')]),
    ("lower", &[(b'a', b'z')]),
    ("print", &[(b' ', b'~')]),
    (
        "punct",
        &[(b'!', b'/'), (b':', b'@'), (b'[', b'`'), (b'{', b'~')],
    ),
    ("space", &[(b'\t', b'\r'), (b' ', b' ')]),
    ("upper", &[(b'A', b'Z')]),
    ("word", WORD),
    ("xdigit", &[(b'0', b'9'), (b'A', b'F'), (b'a', b'f')]),
];

/// Parses and compiles `pattern`; `fold` is the initial `(?i)`.
pub(super) fn parse(pattern: &str, fold: bool) -> Result<Program, Error> {
    let mut parser = Parser {
        pattern: pattern.as_bytes(),
        pos: 0,
        depth: 0,
        names: Vec::new(),
        program: Program::default(),
    };
    let flags = Flags {
        fold,
        multi_line: false,
        dot_nl: false,
    };
    parser.alternation(flags)?;
    // Only an unmatched `)` stops the top-level alternation early.
    if parser.pos < pattern.len() {
        return Err(Error::at("unmatched )", parser.pos));
    }
    parser.program.push(Inst::Match)?;
    Ok(parser.program)
}

struct Parser<'p> {
    /// The pattern's bytes, each one character (Latin-1).
    pattern: &'p [u8],
    /// Offset of the next character (= byte).
    pos: usize,
    /// Open groups around the cursor.
    depth: u32,
    /// Group names seen so far: RE2 rejects a name used twice.
    names: Vec<&'p [u8]>,
    program: Program,
}

impl<'p> Parser<'p> {
    fn rest(&self) -> &'p [u8] {
        self.pattern.get(self.pos..).unwrap_or_default()
    }

    /// The next character: a byte, as a `char` so that the parser reads like the syntax.
    fn peek(&self) -> Option<char> {
        self.rest().first().map(|&b| char::from(b))
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.pos += 1;
        }
        found
    }

    /// `a|b|...` up to the end or a `)` (left for the caller). Flags set by `(?i)` last until
    /// the end of the enclosing group, across `|`, as in RE2. Returns the largest product of
    /// nested repetition counts inside (RE2 bounds it by 1000).
    fn alternation(&mut self, mut flags: Flags) -> Result<u32, Error> {
        let mut jumps = Vec::new();
        let mut product = 1;
        loop {
            let start = self.program.len();
            product = product.max(self.concat(&mut flags)?);
            if self.peek() != Some('|') {
                break;
            }
            self.pos += 1;
            jumps.push(self.program.alternative(start)?);
        }
        self.program.end_jumps(&jumps);
        Ok(product)
    }

    /// Atoms and their repetitions up to `|`, `)` or the end; returns their largest product of
    /// nested repetition counts.
    fn concat(&mut self, flags: &mut Flags) -> Result<u32, Error> {
        // Where the last atom starts and its product: a repetition applies to it.
        let mut last: Option<(usize, u32)> = None;
        let mut after_repetition = false;
        let mut product = 1;
        while let Some(c) = self.peek()
            && c != '|'
            && c != ')'
        {
            let at = self.pos;
            if let Some((min, max)) = self.repetition()? {
                // RE2 (Perl mode) rejects stacked operators: `a**`, `a*+` (possessive). After a
                // flag group (or an empty `\Q\E`), which adds no atom, it repeats the atom
                // before: `a(?i)*` is `a*`. At the start of a group or alternative: an error.
                if after_repetition {
                    return Err(Error::at("repeated repetition operator", at));
                }
                let (start, inner) = last.ok_or(Error::at("nothing to repeat", at))?;
                let count = max.unwrap_or(min);
                let nested = if count >= 2 { inner * count } else { inner };
                if nested > MAX_REPEAT {
                    return Err(Error::at("nested repetition above 1000", at));
                }
                self.program.repeat(start, min, max)?;
                last = Some((start, nested));
                product = product.max(nested);
                after_repetition = true;
                continue;
            }
            after_repetition = false;
            let start = self.program.len();
            self.pos += 1;
            let inner = match c {
                '(' => match self.group(at, flags)? {
                    Some(inner) => inner,
                    None => continue,
                },
                '[' => {
                    let set = self.class(at, *flags)?;
                    self.program.class(set)?;
                    1
                }
                '.' if flags.dot_nl => self.program.class(vec![(0, MAX_CHAR)]).map(|()| 1)?,
                '.' => self
                    .program
                    .class(vec![(0, 9), (11, MAX_CHAR)])
                    .map(|()| 1)?,
                '^' | '$' => {
                    let look = match (c, flags.multi_line) {
                        ('^', false) => Look::Start,
                        ('^', true) => Look::StartLine,
                        (_, false) => Look::End,
                        (_, true) => Look::EndLine,
                    };
                    self.program.push(Inst::Look(look))?;
                    1
                }
                '\\' => match self.escape(at, false)? {
                    Escape::Char(c) => self.literal(c, *flags).map(|()| 1)?,
                    Escape::Class(table, negated) => {
                        let mut set = Vec::new();
                        add_table(&mut set, table, negated, flags.fold);
                        self.program.class(set).map(|()| 1)?
                    }
                    Escape::Look(look) => self.program.push(Inst::Look(look)).map(|()| 1)?,
                    Escape::Quote => {
                        let text = self.rest();
                        let end = find_pair(text, b'\\', b'E');
                        self.pos += (end + 2).min(text.len());
                        // Each character its own atom: a repetition after `\Q..\E` takes the last.
                        for &c in text.get(..end).unwrap_or_default() {
                            last = Some((self.program.len(), 1));
                            self.literal(c.into(), *flags)?;
                        }
                        continue;
                    }
                },
                c => self.literal(c as u32, *flags).map(|()| 1)?,
            };
            last = Some((start, inner));
            product = product.max(inner);
        }
        Ok(product)
    }

    /// A repetition operator at the cursor, consumed with its lazy `?`. A `{` that does not
    /// start a well-formed `{n}`, `{n,}` or `{n,m}` is a literal (RE2), left unconsumed.
    fn repetition(&mut self) -> Result<Option<(u32, Option<u32>)>, Error> {
        let start = self.pos;
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => match self.counted() {
                Some(bounds) => bounds,
                None => {
                    self.pos = start;
                    return Ok(None);
                }
            },
            _ => return Ok(None),
        };
        if self.pos == start {
            self.pos += 1; // `*`, `+` or `?`
        }
        if min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT) {
            return Err(Error::at("repetition count above 1000", start));
        }
        if max.is_some_and(|m| m < min) {
            return Err(Error::at("repetition range max < min", start));
        }
        self.eat('?');
        Ok(Some((min, max)))
    }

    /// `{n}`, `{n,}`, `{n,m}` from the cursor (at `{`); `None` when malformed.
    fn counted(&mut self) -> Option<(u32, Option<u32>)> {
        self.pos += 1;
        let min = self.number()?;
        let max = if self.eat(',') {
            if self.peek() == Some('}') {
                None
            } else {
                Some(self.number()?)
            }
        } else {
            Some(min)
        };
        self.eat('}').then_some((min, max))
    }

    /// Decimal digits, without a leading zero (RE2 reads `{01}` as literal text).
    fn number(&mut self) -> Option<u32> {
        let digits = self
            .rest()
            .iter()
            .take_while(|d| d.is_ascii_digit())
            .count();
        let text = self.rest().get(..digits)?;
        if digits == 0 || (digits > 1 && text.starts_with(b"0")) {
            return None;
        }
        self.pos += digits;
        Some(text.iter().fold(0u32, |n, d| {
            n.saturating_mul(10).saturating_add(u32::from(d - b'0'))
        }))
    }

    /// After `(`: a group (returns its nested repetition product), or `None` for a flag
    /// setting `(?ims-U)`, which changes `flags`.
    fn group(&mut self, open: usize, flags: &mut Flags) -> Result<Option<u32>, Error> {
        let mut inner = *flags;
        if self.eat('?') {
            let rest = self.rest();
            if let [b'=' | b'!', ..] | [b'<', b'=' | b'!', ..] = rest {
                return Err(Error::at("lookaround is not supported", open));
            }
            let name_len = match rest {
                [b'P', b'<', ..] => Some(2),
                [b'<', ..] => Some(1),
                _ => None,
            };
            if let Some(prefix) = name_len {
                let name_at = self.pos + prefix;
                let name = self.pattern.get(name_at..).unwrap_or_default();
                let Some(len) = name.iter().position(|&b| b == b'>') else {
                    return Err(Error::at("unclosed group name", open));
                };
                let name = name.get(..len).unwrap_or_default();
                if name.is_empty() || !name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(Error::at("invalid group name", name_at));
                }
                if self.names.contains(&name) {
                    return Err(Error::at("duplicate group name", name_at));
                }
                self.names.push(name);
                self.pos = name_at + name.len() + 1;
            } else {
                // Flags: `-` negates those after it; `(?-)` and `(?i-:` negate nothing (errors).
                let mut negated = false;
                let mut saw_flag = false;
                loop {
                    let at = self.pos;
                    match self.bump() {
                        Some('i') => inner.fold = !negated,
                        Some('m') => inner.multi_line = !negated,
                        Some('s') => inner.dot_nl = !negated,
                        Some('U') => {}
                        Some('-') if !negated => {
                            negated = true;
                            saw_flag = false;
                            continue;
                        }
                        Some(':') if !negated || saw_flag => break,
                        Some(')') if !negated || saw_flag => {
                            *flags = inner;
                            return Ok(None);
                        }
                        Some(_) => return Err(Error::at("invalid flag", at)),
                        None => return Err(Error::at("unclosed group", open)),
                    }
                    saw_flag = true;
                }
            }
        }
        self.depth += 1;
        if self.depth > NEST_LIMIT {
            return Err(Error::at("nesting too deep", open));
        }
        let product = self.alternation(inner)?;
        self.depth -= 1;
        if !self.eat(')') {
            return Err(Error::at("unclosed group", open));
        }
        Ok(Some(product))
    }

    /// After `[`: a bracketed class. `]` first is literal; `-` first, last or after a range is
    /// literal (Perl mode); `[` is literal unless it opens `[:name:]`.
    fn class(&mut self, open: usize, flags: Flags) -> Result<Vec<Range>, Error> {
        let negated = self.eat('^');
        let mut set = Vec::new();
        let mut first = true;
        loop {
            let at = self.pos;
            let lo = match self.bump() {
                None => return Err(Error::at("unclosed class", open)),
                Some(']') if !first => break,
                Some('[') if self.peek() == Some(':') => {
                    // `[:name:]` up to the first `:]`; without one, `[` is a literal (RE2).
                    let rest = self.rest();
                    let end = find_pair(rest, b':', b']');
                    if end == rest.len() {
                        u32::from(b'[')
                    } else {
                        let name = rest.get(1..end).unwrap_or_default();
                        let (negated, name) = match name {
                            [b'^', name @ ..] => (true, name),
                            _ => (false, name),
                        };
                        let (_, table) = POSIX_CLASSES
                            .iter()
                            .find(|(known, _)| known.as_bytes() == name)
                            .ok_or(Error::at("unknown POSIX class", at))?;
                        add_table(&mut set, table, negated, flags.fold);
                        self.pos += end + 2;
                        first = false;
                        continue;
                    }
                }
                Some('\\') => match self.escape(at, true)? {
                    Escape::Char(c) => c,
                    Escape::Class(table, negated) => {
                        add_table(&mut set, table, negated, flags.fold);
                        first = false;
                        continue;
                    }
                    Escape::Look(_) | Escape::Quote => {
                        return Err(Error::at("invalid escape in class", at));
                    }
                },
                Some(c) => c as u32,
            };
            first = false;
            let mut hi = lo;
            let rest = self.rest();
            if let [b'-', next, ..] = rest
                && *next != b']'
            {
                self.pos += 1;
                let end_at = self.pos;
                hi = match self.bump() {
                    Some('\\') => match self.escape(end_at, true)? {
                        Escape::Char(c) => c,
                        _ => return Err(Error::at("invalid class range", at)),
                    },
                    Some(c) => c as u32,
                    None => return Err(Error::at("unclosed class", open)),
                };
                if hi < lo {
                    return Err(Error::at("invalid class range", at));
                }
            }
            add_range(&mut set, lo, hi);
        }
        if flags.fold {
            fold_case(&mut set);
        }
        if negated {
            set = complement(&set);
        }
        Ok(set)
    }

    /// After `\`. `at` is the offset of the backslash.
    fn escape(&mut self, at: usize, in_class: bool) -> Result<Escape, Error> {
        let c = self.bump().ok_or(Error::at("trailing backslash", at))?;
        Ok(Escape::Char(match c {
            'a' => 7,
            'f' => 0x0C,
            't' => 9,
            'n' => 10,
            'r' => 13,
            'v' => 0x0B,
            'x' => self
                .hex()
                .ok_or(Error::at("invalid hex escape (at most \\xFF)", at))?,
            // Octal as RE2: `\0` and up to two more digits; `\1`-`\7` only with a second digit.
            '0'..='7' if c == '0' || matches!(self.rest().first(), Some(b'0'..=b'7')) => {
                let digits = self
                    .rest()
                    .iter()
                    .take(2)
                    .take_while(|d| matches!(d, b'0'..=b'7'))
                    .count();
                let text = self.rest().get(..digits).unwrap_or_default();
                self.pos += digits;
                let value = text.iter().fold(c as u32 - u32::from(b'0'), |n, d| {
                    n * 8 + u32::from(d - b'0')
                });
                if value > MAX_CHAR {
                    return Err(Error::at("invalid octal escape (at most \\377)", at));
                }
                value
            }
            '1'..='9' => return Err(Error::at("backreferences are not supported", at)),
            'd' => return Ok(Escape::Class(DIGIT, false)),
            'D' => return Ok(Escape::Class(DIGIT, true)),
            's' => return Ok(Escape::Class(SPACE, false)),
            'S' => return Ok(Escape::Class(SPACE, true)),
            'w' => return Ok(Escape::Class(WORD, false)),
            'W' => return Ok(Escape::Class(WORD, true)),
            'p' | 'P' => return Err(Error::at("Unicode classes are not supported", at)),
            'A' if !in_class => return Ok(Escape::Look(Look::Start)),
            'z' if !in_class => return Ok(Escape::Look(Look::End)),
            'b' if !in_class => return Ok(Escape::Look(Look::WordBoundary)),
            'B' if !in_class => return Ok(Escape::Look(Look::NotWordBoundary)),
            'Q' if !in_class => return Ok(Escape::Quote),
            // Any ASCII punctuation (and `\_`, space) stands for itself; letters are reserved.
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => c as u32,
            _ => return Err(Error::at("invalid escape", at)),
        }))
    }

    /// After `\x`: two hex digits, or `{1+ hex digits}` up to FF (Latin-1, as Envoy's RE2).
    fn hex(&mut self) -> Option<u32> {
        let rest = self.rest();
        let (digits, len) = match rest {
            [b'{', ..] => {
                let end = rest.iter().position(|&b| b == b'}')?;
                (rest.get(1..end)?, end + 1)
            }
            _ => (rest.get(..2)?, 2),
        };
        if digits.is_empty() {
            return None;
        }
        let mut value = 0u32;
        for &d in digits {
            // Checked per digit (RE2 too), so a long run of digits cannot overflow.
            value = value * 16 + char::from(d).to_digit(16)?;
            if value > MAX_CHAR {
                return None;
            }
        }
        self.pos += len;
        Some(value)
    }

    fn literal(&mut self, c: u32, flags: Flags) -> Result<(), Error> {
        let mut set = vec![(c, c)];
        if flags.fold {
            fold_case(&mut set);
        }
        self.program.class(set)
    }
}

/// Adds `lo..=hi` to a set of ranges kept sorted by start (they may overlap: a match only asks
/// "in any range", and [`complement`] copes). Insertion by swapping down: classes are short.
fn add_range(set: &mut Vec<Range>, lo: u32, hi: u32) {
    set.push((lo, hi));
    let mut i = set.len() - 1;
    while i > 0 && set.get(i - 1).is_some_and(|&(a, _)| a > lo) {
        set.swap(i - 1, i);
        i -= 1;
    }
}

/// Offset of the first `first` immediately followed by `second` in `bytes`, or its length.
fn find_pair(bytes: &[u8], first: u8, second: u8) -> usize {
    (0..bytes.len())
        .find(|&i| bytes.get(i) == Some(&first) && bytes.get(i + 1) == Some(&second))
        .unwrap_or(bytes.len())
}

/// Adds a Perl or POSIX class, case-folded first when `fold`, then negated: RE2's order, so
/// `(?i)[[:^upper:]]` excludes both cases.
fn add_table(set: &mut Vec<Range>, table: &[(u8, u8)], negated: bool, fold: bool) {
    let mut class = Vec::new();
    for &(lo, hi) in table {
        add_range(&mut class, lo.into(), hi.into());
    }
    if fold {
        fold_case(&mut class);
    }
    if negated {
        class = complement(&class);
    }
    for (lo, hi) in class {
        add_range(set, lo, hi);
    }
}

/// ASCII case folding: adds the other case of every ASCII letter in the set.
fn fold_case(set: &mut Vec<Range>) {
    for (lo, hi) in set.clone() {
        for (a, z) in [
            (u32::from(b'a'), u32::from(b'z')),
            (u32::from(b'A'), u32::from(b'Z')),
        ] {
            let (l, h) = (lo.max(a), hi.min(z));
            if l <= h {
                // Upper and lower case differ by bit 5, so a letter range maps to a range.
                add_range(set, l ^ 0x20, h ^ 0x20);
            }
        }
    }
}

/// Every character (byte) in no range of the set (sorted by start, maybe overlapping).
fn complement(set: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    let mut next = 0;
    for &(lo, hi) in set {
        if lo > next {
            out.push((next, lo - 1));
        }
        next = next.max(hi + 1);
    }
    if next <= MAX_CHAR {
        out.push((next, MAX_CHAR));
    }
    out
}
