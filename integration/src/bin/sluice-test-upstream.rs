//! A test upstream as a process of its own, for tests that kill an endpoint by PID (as a crash
//! or an OOM kill ends a server: no polite close from the test process).
//!
//! Usage: `sluice-test-upstream NAME PORT` (PORT 0: a free one). It answers as
//! [`Upstream`] does, prints `listening on PORT` once bound, then answers commands on stdin,
//! one per line: `count` prints `TOTAL PROBES` (requests since the last clear, and how many of
//! them were `GET /healthz`); `clear` forgets them and prints `ok`. It exits when stdin closes,
//! so it never outlives the test that started it.

use std::io::{BufRead, Write};

use sluice_integration::upstream::Upstream;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(port)) = (args.next(), args.next()) else {
        eprintln!("usage: sluice-test-upstream NAME PORT");
        std::process::exit(2);
    };
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("sluice-test-upstream: PORT must be a number, not {port:?}");
        std::process::exit(2);
    };
    let upstream = Upstream::start_at(&name, port);
    let mut out = std::io::stdout().lock();
    let say = |out: &mut std::io::StdoutLock<'_>, line: String| {
        // The test reads every line; if it is gone, so is the reason to run.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            std::process::exit(0);
        }
    };
    say(&mut out, format!("listening on {}", upstream.port()));
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "count" => {
                let requests = upstream.requests();
                let probes = requests.iter().filter(|r| r.path == "/healthz").count();
                say(&mut out, format!("{} {probes}", requests.len()));
            }
            "clear" => {
                upstream.clear_requests();
                say(&mut out, "ok".to_owned());
            }
            other => say(&mut out, format!("error: unknown command {other:?}")),
        }
    }
}
