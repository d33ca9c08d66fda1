//! `sluice-loadgen`: the open-loop generator of [`sluice_bench`] as a command; prints one JSON
//! object (latencies in microseconds from the intended send time).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use sluice_bench::OpenLoop;

/// Fixed-rate HTTP/1.1 GETs with latency measured from the intended send time.
#[derive(Debug, Parser)]
#[command(name = "sluice-loadgen", version, about)]
struct Args {
    /// Target address, e.g. 127.0.0.1:10000.
    #[arg(long)]
    target: SocketAddr,
    /// Requests per second, for the whole run (all connections together).
    #[arg(long)]
    rate: u32,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load sent first and not recorded.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Keep-alive connections in the pool (one request in flight on each; a due request takes
    /// an idle one).
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// `Host` header.
    #[arg(long, default_value = "bench")]
    host: String,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Extra request header `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
}

fn main() {
    if let Err(error) = run() {
        eprintln!("sluice-loadgen: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    let headers = args
        .headers
        .iter()
        .map(|header| {
            header
                .split_once(':')
                .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
                .with_context(|| format!("--header {header:?} is not `name: value`"))
        })
        .collect::<Result<Vec<_>>>()?;
    let report = sluice_bench::run(&OpenLoop {
        target: args.target,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        connections: args.connections,
        host: args.host,
        path: args.path,
        headers,
    })?;
    println!("{}", report.to_json());
    Ok(())
}
