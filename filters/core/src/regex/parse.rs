//! Pattern text -> [`Hir`], a small tree of character classes, assertions, concatenations,
//! alternations and repetitions. The syntax is RE2's (what Envoy's `safe_regex` accepts, Perl
//! flags on) without Unicode classes; groups capture nothing (a match only answers yes/no).
//!
//! Every character, literal or class, becomes a sorted list of disjoint `u32` ranges appended to
//! one pool; the tree refers to it by index, so a class repeated by `{n}` is stored once.

use super::{Error, NEST_LIMIT};

/// Inclusive range of Unicode scalar values. `u32`, not `char`, so complements need no checks.
pub(super) type Range = (u32, u32);

const MAX_CHAR: u32 = 0x10_FFFF;

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

/// The parsed pattern.
#[derive(Debug)]
pub(super) enum Hir {
    Empty,
    /// One character in `pool[start..end]`.
    Class(u32, u32),
    Look(Look),
    Concat(Vec<Hir>),
    Alt(Vec<Hir>),
    /// `min` to `max` copies (`None`: unbounded).
    Repeat(Box<Hir>, u32, Option<u32>),
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

/// The POSIX classes of `[[:name:]]`, as RE2 defines them (ASCII).
fn posix_class(name: &str) -> Option<&'static [(u8, u8)]> {
    Some(match name {
        "alnum" => &[(b'0', b'9'), (b'A', b'Z'), (b'a', b'z')],
        "alpha" => &[(b'A', b'Z'), (b'a', b'z')],
        "ascii" => &[(0, 0x7F)],
        "blank" => &[(b'\t', b'\t'), (b' ', b' ')],
        "cntrl" => &[(0, 0x1F), (0x7F, 0x7F)],
        "digit" => DIGIT,
        "graph" => &[(b'!', b'~')],
        "lower" => &[(b'a', b'z')],
        "print" => &[(b' ', b'~')],
        "punct" => &[(b'!', b'/'), (b':', b'@'), (b'[', b'`'), (b'{', b'~')],
        "space" => &[(b'\t', b'\r'), (b' ', b' ')],
        "upper" => &[(b'A', b'Z')],
        "word" => WORD,
        "xdigit" => &[(b'0', b'9'), (b'A', b'F'), (b'a', b'f')],
        _ => return None,
    })
}

/// Parses `pattern`; `fold` is the initial `(?i)`. Returns the tree and its range pool.
pub(super) fn parse(pattern: &str, fold: bool) -> Result<(Hir, Vec<Range>), Error> {
    let mut parser = Parser {
        pattern,
        pos: 0,
        depth: 0,
        after_repetition: false,
        names: Vec::new(),
        pool: Vec::new(),
    };
    let flags = Flags {
        fold,
        multi_line: false,
        dot_nl: false,
    };
    let hir = parser.alternation(flags)?;
    // Only an unmatched `)` stops the top-level alternation early.
    if parser.pos < pattern.len() {
        return Err(Error::at("unmatched )", parser.pos));
    }
    Ok((hir, parser.pool))
}

struct Parser<'p> {
    pattern: &'p str,
    /// Byte offset of the next character.
    pos: usize,
    /// Open groups around the cursor.
    depth: u32,
    /// The last token was a repetition operator (RE2's `lastRepeat`); a flag group resets it.
    after_repetition: bool,
    /// Group names seen so far: RE2 rejects a name used twice.
    names: Vec<&'p str>,
    pool: Vec<Range>,
}

impl<'p> Parser<'p> {
    fn rest(&self) -> &'p str {
        self.pattern.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.pos += c.len_utf8();
        }
        found
    }

    /// `a|b|...` up to the end or a `)` (left for the caller). Flags set by `(?i)` last until
    /// the end of the enclosing group, across `|`, as in RE2.
    fn alternation(&mut self, mut flags: Flags) -> Result<Hir, Error> {
        let mut alternatives = Vec::new();
        let mut items = Vec::new();
        loop {
            match self.peek() {
                None | Some(')') => break,
                Some('|') => {
                    self.pos += 1;
                    alternatives.push(concat(std::mem::take(&mut items)));
                }
                Some(_) => self.item(&mut items, &mut flags)?,
            }
        }
        alternatives.push(concat(items));
        Ok(match alternatives.pop() {
            Some(only) if alternatives.is_empty() => only,
            Some(last) => {
                alternatives.push(last);
                Hir::Alt(alternatives)
            }
            None => Hir::Empty,
        })
    }

    /// One atom and its repetition, appended to `items`; or a flag group, which changes `flags`.
    fn item(&mut self, items: &mut Vec<Hir>, flags: &mut Flags) -> Result<(), Error> {
        let start = self.pos;
        if let Some((min, max)) = self.repetition()? {
            // RE2 (Perl mode) rejects stacked operators: `a**`, `a*+` (possessive), `a{2}{3}`.
            if self.after_repetition {
                return Err(Error::at("repeated repetition operator", start));
            }
            // After a flag group (or an empty `\Q\E`), which adds no atom, RE2 repeats the atom
            // before it: `a(?i)*` is `a*`. At the start of a group or alternative: an error.
            let Some(atom) = items.pop() else {
                return Err(Error::at("nothing to repeat", start));
            };
            items.push(repeat(atom, min, max, start)?);
            self.after_repetition = true;
            return Ok(());
        }
        self.after_repetition = false;
        let Some(c) = self.bump() else {
            return Ok(());
        };
        let atom = match c {
            '(' => match self.group(start, flags)? {
                Some(group) => group,
                None => return Ok(()),
            },
            '[' => self.class(start, *flags)?,
            '.' if flags.dot_nl => self.push_class(vec![(0, MAX_CHAR)]),
            '.' => self.push_class(vec![(0, 9), (11, MAX_CHAR)]),
            '^' if flags.multi_line => Hir::Look(Look::StartLine),
            '^' => Hir::Look(Look::Start),
            '$' if flags.multi_line => Hir::Look(Look::EndLine),
            '$' => Hir::Look(Look::End),
            '\\' => match self.escape(start, false)? {
                Escape::Char(c) => self.literal(c, *flags),
                Escape::Class(table, negated) => {
                    let mut set = Vec::new();
                    add_table(&mut set, table, negated, flags.fold);
                    self.push_class(set)
                }
                Escape::Look(look) => Hir::Look(look),
                Escape::Quote => {
                    let text = self.rest();
                    let end = find_pair(text, b'\\', b'E');
                    self.pos += (end + 2).min(text.len());
                    let mut chars = text.get(..end).unwrap_or("").chars();
                    // A repetition after `\Q...\E` applies to its last character, as in RE2.
                    let Some(last) = chars.next_back() else {
                        return Ok(());
                    };
                    for c in chars {
                        let lit = self.literal(c as u32, *flags);
                        items.push(lit);
                    }
                    self.literal(last as u32, *flags)
                }
            },
            c => self.literal(c as u32, *flags),
        };
        let atom = match self.repetition()? {
            // Stacked after it (`a**`): refused by the check above, at the next item.
            Some((min, max)) => {
                self.after_repetition = true;
                repeat(atom, min, max, start)?
            }
            None => {
                self.after_repetition = false;
                atom
            }
        };
        items.push(atom);
        Ok(())
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
        let digits = self.rest().bytes().take_while(u8::is_ascii_digit).count();
        let text = self.rest().get(..digits)?;
        if digits == 0 || (digits > 1 && text.starts_with('0')) {
            return None;
        }
        self.pos += digits;
        Some(text.bytes().fold(0u32, |n, d| {
            n.saturating_mul(10).saturating_add(u32::from(d - b'0'))
        }))
    }

    /// After `(`: a group, or `None` for a flag setting `(?ims-U)` (which changes `flags`).
    fn group(&mut self, open: usize, flags: &mut Flags) -> Result<Option<Hir>, Error> {
        let mut inner = *flags;
        if self.eat('?') {
            let rest = self.rest();
            if let [b'=' | b'!', ..] | [b'<', b'=' | b'!', ..] = rest.as_bytes() {
                return Err(Error::at("lookaround is not supported", open));
            }
            let name_len = match rest.as_bytes() {
                [b'P', b'<', ..] => Some(2),
                [b'<', ..] => Some(1),
                _ => None,
            };
            if let Some(prefix) = name_len {
                let name_at = self.pos + prefix;
                let name = self.pattern.get(name_at..).unwrap_or("");
                let Some(len) = name.bytes().position(|b| b == b'>') else {
                    return Err(Error::at("unclosed group name", open));
                };
                let name = name.get(..len).unwrap_or("");
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
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
        let hir = self.alternation(inner)?;
        self.depth -= 1;
        if !self.eat(')') {
            return Err(Error::at("unclosed group", open));
        }
        Ok(Some(hir))
    }

    /// After `[`: a bracketed class. `]` first is literal; `-` first, last or after a range is
    /// literal (Perl mode); `[` is literal unless it opens `[:name:]`.
    fn class(&mut self, open: usize, flags: Flags) -> Result<Hir, Error> {
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
                        let name = rest.get(1..end).unwrap_or("");
                        let (negated, name) = match name.as_bytes() {
                            [b'^', ..] => (true, name.get(1..).unwrap_or("")),
                            _ => (false, name),
                        };
                        let table =
                            posix_class(name).ok_or(Error::at("unknown POSIX class", at))?;
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
            if let [b'-', next, ..] = rest.as_bytes()
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
        Ok(self.push_class(set))
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
            'x' => self.hex().ok_or(Error::at("invalid hex escape", at))?,
            // Octal as RE2: `\0` and up to two more digits; `\1`-`\7` only with a second digit.
            '0'..='7' if c == '0' || self.rest().starts_with(|d: char| matches!(d, '0'..='7')) => {
                let digits = self
                    .rest()
                    .bytes()
                    .take(2)
                    .take_while(|d| matches!(d, b'0'..=b'7'))
                    .count();
                let text = self.rest().get(..digits).unwrap_or("");
                self.pos += digits;
                text.bytes().fold(c as u32 - u32::from(b'0'), |n, d| {
                    n * 8 + u32::from(d - b'0')
                })
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

    /// After `\x`: two hex digits, or `{1+ hex digits}` up to U+10FFFF.
    fn hex(&mut self) -> Option<u32> {
        let rest = self.rest();
        let (digits, len) = match rest.as_bytes() {
            [b'{', ..] => {
                let end = rest.bytes().position(|b| b == b'}')?;
                (rest.get(1..end)?, end + 1)
            }
            _ => (rest.get(..2)?, 2),
        };
        if digits.is_empty() {
            return None;
        }
        let mut value = 0u32;
        for d in digits.chars() {
            // Checked per digit (RE2 too), so a long run of digits cannot overflow.
            value = value * 16 + d.to_digit(16)?;
            if value > MAX_CHAR {
                return None;
            }
        }
        self.pos += len;
        Some(value)
    }

    fn literal(&mut self, c: u32, flags: Flags) -> Hir {
        let mut set = vec![(c, c)];
        if flags.fold {
            fold_case(&mut set);
        }
        self.push_class(set)
    }

    fn push_class(&mut self, set: Vec<Range>) -> Hir {
        let start = self.pool.len() as u32;
        self.pool.extend(set);
        Hir::Class(start, self.pool.len() as u32)
    }
}

/// `atom{min,max}`, unless RE2's nested-repetition bound refuses it (`start`: for the error).
fn repeat(atom: Hir, min: u32, max: Option<u32>, start: usize) -> Result<Hir, Error> {
    if repeat_budget(&atom, MAX_REPEAT / max.unwrap_or(min).max(1)) == 0 {
        return Err(Error::at("nested repetition above 1000", start));
    }
    Ok(Hir::Repeat(Box::new(atom), min, max))
}

fn concat(mut items: Vec<Hir>) -> Hir {
    match items.len() {
        0 => Hir::Empty,
        1 => items.pop().unwrap_or(Hir::Empty),
        _ => Hir::Concat(items),
    }
}

/// RE2's check that nested counted repetitions stay within 1000 copies: `budget` is divided by
/// each count met going down (the max, or the min when unbounded); 0 means too many.
fn repeat_budget(hir: &Hir, budget: u32) -> u32 {
    match hir {
        Hir::Repeat(sub, min, max) => {
            let count = max.unwrap_or(*min);
            // RE2 walks every repetition node but divides only by counted ones; `*`/`+`/`?`
            // count 0 or 1 and leave the budget as is.
            let budget = if count >= 2 { budget / count } else { budget };
            repeat_budget(sub, budget)
        }
        Hir::Concat(items) | Hir::Alt(items) => items
            .iter()
            .map(|item| repeat_budget(item, budget))
            .min()
            .unwrap_or(budget),
        _ => budget,
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

/// Byte offset of the first `first` immediately followed by `second` in `text`, or its length.
fn find_pair(text: &str, first: u8, second: u8) -> usize {
    let bytes = text.as_bytes();
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

/// Every scalar value in no range of the set (sorted by start, maybe overlapping).
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
