//! `Regex::is_match` allocates nothing in the steady state: its two sparse sets and its stack
//! are sized to the program when the regex is compiled (requirement of the per-request path).
//! A counting global allocator shows it; the only test in this binary, so no other thread
//! allocates while it counts.
#![allow(unsafe_code)] // a GlobalAlloc impl is unsafe by definition; it only forwards to System

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_core::regex::Regex;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn is_match_does_not_allocate() {
    let patterns = [
        r"(?i)/api/v[0-9]+/(users|items)/\d{1,6}(/.*)?",
        r".*user=(jason|alice)(;.*)?",
        r"(?m)^[[:alpha:]_][\w.-]*\b(a|b|)*$",
        r"(x+x+)+y",
    ];
    let regexes: Vec<Regex> = patterns
        .iter()
        .map(|p| Regex::new(p, false).unwrap())
        .collect();
    let haystacks: Vec<Vec<u8>> = [
        "/API/v2/users/12345/profile",
        "a=1; user=jason; b=2",
        "é\nabc_d.e-f",
        &"x".repeat(2_000),
        "",
    ]
    .iter()
    .map(|h| h.as_bytes().to_vec())
    .chain([b"\xff".to_vec()])
    .collect();
    // The answers regex-lite gives (computed first: it allocates), to show the VM really ran.
    let mut want = Vec::new();
    for pattern in patterns {
        let oracle = regex_lite::Regex::new(&format!("^(?:{pattern})$")).unwrap();
        for haystack in &haystacks {
            want.push(std::str::from_utf8(haystack).is_ok_and(|h| oracle.is_match(h)));
        }
    }
    let mut got = Vec::with_capacity(want.len());
    let mut budgeted = Vec::with_capacity(want.len());
    sluice_core::regex::start_request();
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for regex in &regexes {
        for haystack in &haystacks {
            got.push(regex.is_match(haystack));
            // The request path's form: the per-request budget is a thread-local counter.
            budgeted.push(regex.is_match_within_budget(haystack));
        }
    }
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert_eq!(allocations, 0, "is_match allocated");
    assert_eq!(got, want);
    assert_eq!(budgeted, want, "these matches fit one request's budget");
    assert_eq!(sluice_core::regex::take_budget_exceeded(), 0);
    assert!(got.contains(&true) && got.contains(&false));
}
