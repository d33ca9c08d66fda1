//! The program the parser emits as it reads: a Thompson NFA as a list of instructions, one per
//! character class or assertion, `Split`/`Jump` for alternation and repetition, `Match` last.
//!
//! Targets are relative to the instruction that holds them, so a fragment (an atom, a group)
//! keeps its meaning when an instruction is inserted before it (`x*` puts a `Split` in front)
//! and when it is copied (`x{3}` is three copies): no tree, no relocation.

use super::parse::{Look, Range};
use super::{Error, SIZE_LIMIT};

/// One instruction.
#[derive(Debug, Clone, Copy)]
pub(super) enum Inst {
    /// Consume one character in `pool[start..end]`, then go on at the next instruction.
    Class(u32, u32),
    /// Go on at both `pc + first` and `pc + second`.
    Split(i32, i32),
    /// Go on at `pc + offset`.
    Jump(i32),
    /// Go on at the next instruction if the assertion holds here.
    Look(Look),
    Match,
}

/// A program being built, with the character ranges its classes refer to.
#[derive(Debug, Default)]
pub(super) struct Program {
    pub(super) insts: Vec<Inst>,
    pub(super) pool: Vec<Range>,
}

impl Program {
    /// Refuses to grow past [`SIZE_LIMIT`] bytes (instructions plus ranges) by `insts` more
    /// instructions and `ranges` more ranges. Checked before every growth, so a pattern that
    /// would expand to gigabytes fails as soon as it passes the limit.
    fn reserve(&self, insts: usize, ranges: usize) -> Result<(), Error> {
        let bytes = (self.insts.len() + insts) * size_of::<Inst>()
            + (self.pool.len() + ranges) * size_of::<Range>();
        if bytes > SIZE_LIMIT {
            return Err(Error::too_big());
        }
        Ok(())
    }

    pub(super) fn len(&self) -> usize {
        self.insts.len()
    }

    pub(super) fn push(&mut self, inst: Inst) -> Result<(), Error> {
        self.reserve(1, 0)?;
        self.insts.push(inst);
        Ok(())
    }

    /// A one-character instruction for the ranges of `set`.
    pub(super) fn class(&mut self, set: Vec<Range>) -> Result<(), Error> {
        self.reserve(1, set.len())?;
        let start = self.pool.len() as u32;
        self.pool.extend(set);
        self.insts.push(Inst::Class(start, self.pool.len() as u32));
        Ok(())
    }

    /// Makes the instructions from `start` on the first alternatives of an alternation whose
    /// next alternative follows: `split(+1, next); fragment; jump(end, patched by `end_jumps`)`.
    /// Returns the jump's index.
    pub(super) fn alternative(&mut self, start: usize) -> Result<u32, Error> {
        self.reserve(2, 0)?;
        let len = (self.insts.len() - start) as i32;
        self.insts.insert(start, Inst::Split(1, len + 2));
        self.insts.push(Inst::Jump(0));
        Ok(self.insts.len() as u32 - 1)
    }

    /// Points the alternatives' jumps at the current end.
    pub(super) fn end_jumps(&mut self, jumps: &[u32]) {
        let end = self.insts.len() as i32;
        for &at in jumps {
            if let Some(inst) = self.insts.get_mut(at as usize) {
                *inst = Inst::Jump(end - at as i32);
            }
        }
    }

    /// Repeats the fragment from `start` to the end `min` to `max` (`None`: unbounded) times.
    pub(super) fn repeat(&mut self, start: usize, min: u32, max: Option<u32>) -> Result<(), Error> {
        let fragment = self.insts.split_off(start.min(self.insts.len()));
        let len = fragment.len();
        // At most max(min, max, 1) copies, each with one Split or Jump, plus one: known
        // before copying, so the limit holds before the memory is taken.
        let copies = max.unwrap_or(min).max(1) as usize;
        self.reserve(copies * (len + 1) + 1, 0)?;
        let len = len as i32;
        match max {
            // x* = split(+1, past); x; jump(back to the split)
            None if min == 0 => {
                self.insts.push(Inst::Split(1, len + 2));
                self.insts.extend_from_slice(&fragment);
                self.insts.push(Inst::Jump(-len - 1));
            }
            // x{n,} = x{n} whose last copy loops: split(back to its start, +1)
            None => {
                for _ in 0..min {
                    self.insts.extend_from_slice(&fragment);
                }
                self.insts.push(Inst::Split(-len, 1));
            }
            // x{n,m} = x{n} then m-n optional copies, each skipping to the end: (x(x)?)?
            Some(max) => {
                for _ in 0..min {
                    self.insts.extend_from_slice(&fragment);
                }
                for left in (0..max - min).rev() {
                    self.insts
                        .push(Inst::Split(1, 1 + len + left as i32 * (len + 1)));
                    self.insts.extend_from_slice(&fragment);
                }
            }
        }
        Ok(())
    }
}
