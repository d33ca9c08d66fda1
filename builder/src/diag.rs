//! Diagnostics: every problem found in the input, with where it is and how to fix it.

use std::fmt;

use crate::yaml::{FieldPath, Pos};

/// How bad a diagnostic is. Errors stop generation; warnings are printed and generation goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Generation fails, nothing is written.
    Error,
    /// Something the user should know (e.g. a setting this target cannot express).
    Warning,
}

/// One problem, rendered as
/// `file:line:col: error: Kind/name: field.path: message` plus an indented `hint:` line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The input file (as given on the command line or to [`crate::Inputs`]).
    pub file: String,
    /// Position in that file.
    pub pos: Pos,
    /// Error or warning.
    pub severity: Severity,
    /// `Kind/name` of the resource, or empty when the problem precedes resources (YAML syntax).
    pub resource: String,
    /// Field path inside the resource, e.g. `spec.http[0].route[0].destination.subset`.
    pub path: FieldPath,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}: {level}: ", self.file, self.pos)?;
        if !self.resource.is_empty() {
            write!(f, "{}: ", self.resource)?;
        }
        if !self.path.is_root() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// All diagnostics of one run, sorted by file and position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// True when at least one diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    /// Only the errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    /// Only the warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }

    pub(crate) fn sort(&mut self) {
        self.0.sort();
        self.0.dedup();
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let errors = self.errors().count();
        if errors > 0 {
            writeln!(
                f,
                "{errors} error{}; nothing was written",
                if errors == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Levenshtein distance, for "did you mean" hints. Inputs are short field and resource names.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev_diag = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let left = row.get(j).copied().unwrap_or(usize::MAX);
            let cost = usize::from(ca != *cb);
            let value = (prev_diag + cost).min(above + 1).min(left + 1);
            prev_diag = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = value;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

/// The candidate closest to `word`, if close enough to be a plausible typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1) && *d > 0 || (*d == 0 && *c != word))
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("mach", "match"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("weight", "weight"), 0);
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("mach", ["match", "route"]), Some("match"));
        assert_eq!(
            did_you_mean("ignoreURICase", ["ignoreUriCase"]),
            Some("ignoreUriCase")
        );
        assert_eq!(did_you_mean("zzzzzz", ["match", "route"]), None);
    }

    #[test]
    fn rendering() {
        let d = Diagnostic {
            file: "a.yaml".into(),
            pos: Pos { line: 3, col: 5 },
            severity: Severity::Error,
            resource: "VirtualService/reviews".into(),
            path: FieldPath::root().key("spec").key("http").index(0),
            message: "bad".into(),
            hint: Some("fix it".into()),
        };
        assert_eq!(
            d.to_string(),
            "a.yaml:3:5: error: VirtualService/reviews: spec.http[0]: bad\n  hint: fix it"
        );
    }
}
