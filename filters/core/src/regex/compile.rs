//! [`Hir`] -> a Thompson program: one instruction per character class or assertion, `Split`
//! and `Jump` for alternation and repetition, `Match` at the end. Counted repetitions are
//! copied out, so the program size is checked at every instruction against [`SIZE_LIMIT`].

use super::parse::{Hir, Look};
use super::{Error, SIZE_LIMIT};

/// One program instruction; `u32` targets are instruction indexes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Inst {
    /// Consume one character in `pool[start..end]`, then go on at the next instruction.
    Class(u32, u32),
    /// Go on at both targets.
    Split(u32, u32),
    Jump(u32),
    /// Go on at the next instruction if the assertion holds here.
    Look(Look),
    Match,
}

/// Compiles `hir` whose class ranges take `pool_len` entries: the program's bytes plus the
/// pool's stay under [`SIZE_LIMIT`].
pub(super) fn compile(hir: &Hir, pool_len: usize) -> Result<Vec<Inst>, Error> {
    let pool_bytes = pool_len * size_of::<super::parse::Range>();
    let mut compiler = Compiler {
        program: Vec::new(),
        max_len: SIZE_LIMIT.saturating_sub(pool_bytes) / size_of::<Inst>(),
    };
    compiler.emit(hir)?;
    compiler.push(Inst::Match)?;
    Ok(compiler.program)
}

struct Compiler {
    program: Vec<Inst>,
    max_len: usize,
}

impl Compiler {
    fn next(&self) -> u32 {
        self.program.len() as u32
    }

    fn push(&mut self, inst: Inst) -> Result<u32, Error> {
        if self.program.len() >= self.max_len {
            return Err(Error::too_big());
        }
        self.program.push(inst);
        Ok(self.next() - 1)
    }

    /// Points a placeholder `Split`/`Jump` at its targets once they are known.
    fn patch(&mut self, at: u32, inst: Inst) {
        if let Some(slot) = self.program.get_mut(at as usize) {
            *slot = inst;
        }
    }

    fn emit(&mut self, hir: &Hir) -> Result<(), Error> {
        match hir {
            Hir::Empty => {}
            Hir::Class(start, end) => {
                self.push(Inst::Class(*start, *end))?;
            }
            Hir::Look(look) => {
                self.push(Inst::Look(*look))?;
            }
            Hir::Concat(items) => {
                for item in items {
                    self.emit(item)?;
                }
            }
            Hir::Alt(items) => {
                // split(a, split(b, c)): each alternative but the last jumps to the end.
                let mut jumps = Vec::new();
                let (last, init) = items.split_last().unwrap_or((&Hir::Empty, &[]));
                for item in init {
                    let split = self.push(Inst::Split(0, 0))?;
                    self.emit(item)?;
                    jumps.push(self.push(Inst::Jump(0))?);
                    self.patch(split, Inst::Split(split + 1, self.next()));
                }
                self.emit(last)?;
                let end = self.next();
                for jump in jumps {
                    self.patch(jump, Inst::Jump(end));
                }
            }
            Hir::Repeat(sub, min, None) if *min > 0 => {
                // x{n,} = x{n-1} x+, and x+ = L: x; split(L, next): one copy fewer than x{n} x*.
                for _ in 1..*min {
                    self.emit(sub)?;
                }
                let start = self.next();
                self.emit(sub)?;
                let split = self.next();
                self.push(Inst::Split(start, split + 1))?;
            }
            Hir::Repeat(sub, _, None) => {
                // x* = L: split(L+1, end); x; jump L
                let split = self.push(Inst::Split(0, 0))?;
                self.emit(sub)?;
                self.push(Inst::Jump(split))?;
                self.patch(split, Inst::Split(split + 1, self.next()));
            }
            Hir::Repeat(sub, min, Some(max)) => {
                for _ in 0..*min {
                    self.emit(sub)?;
                }
                // Each optional copy may be skipped to the end: x{1,3} = x (x (x)?)?.
                let mut splits = Vec::new();
                for _ in *min..*max {
                    splits.push(self.push(Inst::Split(0, 0))?);
                    self.emit(sub)?;
                }
                let end = self.next();
                for split in splits {
                    self.patch(split, Inst::Split(split + 1, end));
                }
            }
        }
        Ok(())
    }
}
