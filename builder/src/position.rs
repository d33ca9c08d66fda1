//! Where a problem is: a line and column in a source file ([`Pos`]) and a path to a field
//! inside a document ([`FieldPath`]).
//!
//! A leaf below every stage: [`crate::diag`] positions its diagnostics with these, the YAML
//! reader ([`crate::input::yaml`]) records them, and every later stage names the field at
//! fault by its path.

use std::fmt;

/// A 1-based line and column in a source file.
#[derive(serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One step of a field path: a mapping key or a sequence index.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path into a document, displayed like `spec.http[0].route[1].weight`.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    /// The empty path (the document itself).
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// The path of the annotation `name` of a resource: `metadata.annotations.<name>`.
    pub fn annotation(name: &str) -> Self {
        Self::root().key("metadata").key("annotations").key(name)
    }

    /// This path extended by a mapping key.
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// This path extended by a sequence index.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }

    /// True for the empty path.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}
