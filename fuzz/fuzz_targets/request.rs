//! Shared by the targets: turns fuzz bytes into requests for the match engine.
//!
//! Layout: lines separated by `\n`; each line is `name:value` (the first `:` after position 0
//! splits, so `:path:/x` is the pseudo-header `:path` with value `/x`). Values are raw bytes:
//! non-UTF-8, NUL and control bytes reach the engine exactly as Envoy could pass them.

use sluice_core::host::MockHost;

/// A request built from fuzz bytes (later duplicates of a header win, as a map would).
pub fn request_from(bytes: &[u8]) -> MockHost {
    let mut host = MockHost::default();
    for line in bytes.split(|&b| b == b'\n') {
        let split = line.iter().skip(1).position(|&b| b == b':').map(|p| p + 1);
        let (name, value) = match split {
            Some(at) => (&line[..at], &line[at + 1..]),
            None => (line, &b""[..]),
        };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        host.headers.insert(name, value.to_vec());
    }
    if let Some(port) = bytes.first() {
        host.port = Some(u32::from(*port) * 257);
    }
    host
}

/// Splits the input at the first NUL: config before, request after.
#[allow(dead_code)] // match_request has no config part
pub fn split_config(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    }
}
