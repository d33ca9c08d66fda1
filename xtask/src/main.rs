//! `cargo xtask`: repository chores.
fn main() {}
