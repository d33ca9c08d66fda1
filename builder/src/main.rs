//! The `sluice` command-line tool.
fn main() {}
