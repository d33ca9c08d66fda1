//! The matcher: a Pike VM. It advances the set of every live instruction one byte (one
//! Latin-1 character, as Envoy's RE2 reads a header) at a time, so a match costs O(len(haystack) x len(program)) whatever the pattern and input: no
//! backtracking, nothing a hostile header can blow up. The sets and the closure stack are sized
//! to the program at compile time, so a match allocates nothing.

use super::compile::Inst;
use super::parse::{Look, Range};

/// A set of instruction indexes with O(1) insert, membership and clear (Briggs & Torczon):
/// `dense[..len]` lists the members in insertion order; `sparse[pc]` is where `pc` sits in
/// `dense` if it is a member.
#[derive(Debug, Clone)]
struct SparseSet {
    dense: Vec<u32>,
    sparse: Vec<u32>,
    len: usize,
}

impl SparseSet {
    fn new(capacity: usize) -> Self {
        Self {
            dense: vec![0; capacity],
            sparse: vec![0; capacity],
            len: 0,
        }
    }

    /// Adds `pc`; false if it was already there (or out of range, which a program never has).
    fn insert(&mut self, pc: u32) -> bool {
        let Some(slot) = self.sparse.get_mut(pc as usize) else {
            return false;
        };
        let at = *slot as usize;
        if at < self.len && self.dense.get(at) == Some(&pc) {
            return false;
        }
        let Some(free) = self.dense.get_mut(self.len) else {
            return false;
        };
        *free = pc;
        *slot = self.len as u32;
        self.len += 1;
        true
    }

    fn members(&self) -> &[u32] {
        self.dense.get(..self.len).unwrap_or_default()
    }
}

/// Per-regex working memory, reused by every match.
#[derive(Debug, Clone)]
pub(super) struct Scratch {
    current: SparseSet,
    next: SparseSet,
    /// Pending instructions of an epsilon closure. Only a newly inserted instruction pushes
    /// (at most two), so `2 * len + 1` entries always suffice and it never grows.
    stack: Vec<u32>,
}

impl Scratch {
    pub(super) fn new(program_len: usize) -> Self {
        Self {
            current: SparseSet::new(program_len),
            next: SparseSet::new(program_len),
            stack: Vec::with_capacity(2 * program_len + 1),
        }
    }
}

/// Whether `program` matches all of `bytes` (the VM starts at offset 0 only and accepts only
/// at the end: the full match Envoy's `safe_regex` means). Each byte costs `budget` one step
/// per live instruction (at most the program's length); `None` when a byte would cost more
/// than is left (the budget is then 0).
pub(super) fn full_match(
    program: &[Inst],
    pool: &[Range],
    scratch: &mut Scratch,
    bytes: &[u8],
    budget: &mut u64,
) -> Option<bool> {
    let Scratch {
        current,
        next,
        stack,
    } = scratch;
    current.len = 0;
    add(program, current, stack, 0, bytes, 0);
    for (at, &byte) in bytes.iter().enumerate() {
        if current.len == 0 {
            return Some(false);
        }
        let steps = current.len as u64;
        if *budget < steps {
            *budget = 0;
            return None;
        }
        *budget -= steps;
        next.len = 0;
        let c = u32::from(byte);
        let after = at + 1;
        for &pc in current.members() {
            if let Some(Inst::Class(start, end)) = program.get(pc as usize)
                && pool
                    .get(*start as usize..*end as usize)
                    .unwrap_or_default()
                    .iter()
                    .any(|&(lo, hi)| lo <= c && c <= hi)
            {
                add(program, next, stack, pc + 1, bytes, after);
            }
        }
        std::mem::swap(current, next);
    }
    Some(
        current
            .members()
            .iter()
            .any(|&pc| matches!(program.get(pc as usize), Some(Inst::Match))),
    )
}

/// Adds `pc` and everything reachable from it without consuming a character, at byte offset
/// `at` of `bytes` (where the assertions are evaluated).
fn add(
    program: &[Inst],
    set: &mut SparseSet,
    stack: &mut Vec<u32>,
    pc: u32,
    bytes: &[u8],
    at: usize,
) {
    stack.clear();
    stack.push(pc);
    while let Some(pc) = stack.pop() {
        if !set.insert(pc) {
            continue;
        }
        match program.get(pc as usize) {
            Some(Inst::Jump(to)) => stack.push(pc.wrapping_add_signed(*to)),
            Some(Inst::Split(first, second)) => {
                stack.push(pc.wrapping_add_signed(*second));
                stack.push(pc.wrapping_add_signed(*first));
            }
            Some(Inst::Look(look)) if holds(*look, bytes, at) => stack.push(pc + 1),
            _ => {}
        }
    }
}

/// Evaluates an assertion between `bytes[at - 1]` and `bytes[at]` (`\b` and line ends are
/// ASCII, as in RE2).
fn holds(look: Look, bytes: &[u8], at: usize) -> bool {
    let before = at.checked_sub(1).and_then(|i| bytes.get(i)).copied();
    let after = bytes.get(at).copied();
    let is_word = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    match look {
        Look::Start => before.is_none(),
        Look::End => after.is_none(),
        Look::StartLine => before.is_none_or(|b| b == b'\n'),
        Look::EndLine => after.is_none_or(|b| b == b'\n'),
        Look::WordBoundary => is_word(before) != is_word(after),
        Look::NotWordBoundary => is_word(before) == is_word(after),
    }
}
