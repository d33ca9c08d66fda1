//! The pattern grammar of the regex engine's tests: patterns from a small grammar and
//! haystacks over the same alphabet, from a fixed-seed PRNG so that a failure reproduces.
//! Shared by tests/regex_differential.rs (against regex-lite) and
//! integration/tests/regex_envoy.rs (against Envoy's RE2).
//!
//! The grammar stays clear of the documented differences between RE2 and regex-lite (see
//! regex_oracle/mod.rs), so every pattern it makes means the same to all three engines.

/// SplitMix64: a fixed seed gives the same patterns on every run and platform.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Characters of patterns and haystacks: a few letters in both cases, a two-byte and a
/// three-byte character, a digit, space, newline, `_` and `-` (word/non-word, line ends).
const ALPHABET: [&str; 12] = ["a", "b", "c", "A", "B", "é", "€", "1", " ", "\n", "_", "-"];

const FLAG_GROUPS: [&str; 5] = ["(?i)", "(?m)", "(?s)", "(?-i)", "(?U)"];

fn literal(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => rng
            .pick(&[r"\.", r"\-", r"\n", r"\x61", r"\x{e9}", r"\t", r"\*"])
            .into(),
        _ => rng
            .pick(&["a", "b", "c", "A", "B", "é", "€", "1", " ", "_", "-"])
            .into(),
    }
}

fn class(rng: &mut Rng) -> String {
    let mut out = String::from("[");
    if rng.below(3) == 0 {
        out.push('^');
    }
    for _ in 0..=rng.below(3) {
        out.push_str(&match rng.below(6) {
            0 => rng.pick(&["a-c", "A-Z", "0-9", "a-é", "b-b"]).into(),
            1 => rng.pick(&[r"\d", r"\w", r"\s", r"\D", r"\W", r"\S"]).into(),
            2 => rng
                .pick(&[
                    "[:alpha:]",
                    "[:^digit:]",
                    "[:space:]",
                    "[:upper:]",
                    "[:punct:]",
                    "[:word:]",
                ])
                .into(),
            3 => r"\n".into(),
            _ => literal(rng).replace(['-'], r"\-"),
        });
    }
    out.push(']');
    out
}

fn atom(rng: &mut Rng, depth: u32) -> String {
    let choice = if depth == 0 {
        rng.below(6)
    } else {
        rng.below(10)
    };
    match choice {
        0..=2 => literal(rng),
        3 => class(rng),
        4 => rng
            .pick(&[
                ".", r"\d", r"\w", r"\s", r"\W", "^", "$", r"\A", r"\z", r"\b", r"\B",
            ])
            .into(),
        5 => rng.pick(&FLAG_GROUPS).into(),
        _ => {
            let open = rng.pick(&[
                "(", "(?:", "(?P<g>", "(?i:", "(?s:", "(?m:", "(?-i:", "(?is:",
            ]);
            // A name may appear once per pattern: a nested named group would repeat it.
            let open = if open == "(?P<g>" { "(" } else { open };
            format!("{open}{})", alternation(rng, depth - 1))
        }
    }
}

fn repetition(rng: &mut Rng) -> String {
    let op = match rng.below(10) {
        0 => "*".to_string(),
        1 => "+".to_string(),
        2 => "?".to_string(),
        3 => format!("{{{}}}", rng.below(4)),
        4 => format!("{{{},}}", rng.below(3)),
        5 => {
            let lo = rng.below(3);
            format!("{{{lo},{}}}", lo + rng.below(3))
        }
        _ => return String::new(),
    };
    if rng.below(4) == 0 { op + "?" } else { op }
}

fn concat(rng: &mut Rng, depth: u32) -> String {
    let mut out = String::new();
    for _ in 0..rng.below(4) {
        let a = atom(rng, depth);
        out.push_str(&a);
        // Not after a flag group: that repeats the atom before it in RE2 (a deliberate
        // difference, see regex_oracle).
        if !FLAG_GROUPS.contains(&a.as_str()) {
            out.push_str(&repetition(rng));
        }
    }
    out
}

fn alternation(rng: &mut Rng, depth: u32) -> String {
    let mut out = concat(rng, depth);
    for _ in 0..rng.below(3) {
        out.push('|');
        out.push_str(&concat(rng, depth));
    }
    out
}

/// A haystack of up to six characters of the alphabet.
pub fn haystack(rng: &mut Rng) -> String {
    (0..rng.below(7)).map(|_| rng.pick(&ALPHABET)).collect()
}

/// A pattern: an alternation of concatenations, groups nested two deep.
pub fn pattern(rng: &mut Rng) -> String {
    alternation(rng, 2)
}
