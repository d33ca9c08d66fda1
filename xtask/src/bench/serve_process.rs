//! `sluice serve` as the benches run it: the release binary in a process of its own (so its CPU
//! time and memory can be read from /proc), on loopback ports it picks itself, its log in a
//! file; killed on drop.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_integration::client::{self, Request};

use super::procfs;

/// A running `sluice serve`.
pub struct ServeProcess {
    child: Child,
    log: PathBuf,
    /// Where its ADS server listens.
    pub xds: SocketAddr,
    /// Where its admin port listens.
    pub admin: SocketAddr,
}

impl ServeProcess {
    /// Starts `binary serve ARGS --xds-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0`, its
    /// stderr into `log`, and waits until it says where it listens and `/readyz` answers 200.
    pub fn start(binary: &Path, args: &[OsString], log: PathBuf) -> Result<ServeProcess> {
        let file = std::fs::File::create(&log)
            .with_context(|| format!("create the serve log {}", log.display()))?;
        let child = Command::new(binary)
            .arg("serve")
            .args(args)
            .args([
                "--xds-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {} serve", binary.display()))?;
        let mut serve = ServeProcess {
            child,
            log,
            xds: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(status) = serve.child.try_wait()? {
                bail!("sluice serve exited ({status}):\n{}", serve.log_text());
            }
            if serve.xds.port() == 0
                && let Some((xds, admin)) = bound_addresses(&serve.log_text())
            {
                serve.xds = xds;
                serve.admin = admin;
            }
            if serve.admin.port() != 0 && matches!(serve.admin_get("/readyz"), Ok((200, _))) {
                return Ok(serve);
            }
            if Instant::now() > deadline {
                bail!("sluice serve not ready in 180 s:\n{}", serve.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` on the admin port: status and body.
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        let response = client::send(
            &Request::get(self.admin.port(), path)
                .authority("127.0.0.1")
                // A large push keeps serve's workers busy for seconds on 2 cores.
                .timeout(Duration::from_secs(30)),
        )?;
        Ok((response.status, response.text()))
    }

    /// The `/metrics` samples, by name with labels as written (`name{label="x"}`).
    pub fn metrics(&self) -> Result<Metrics> {
        let (code, text) = self.admin_get("/metrics")?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(Metrics::parse(&text))
    }

    /// User + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        procfs::process_cpu_seconds(self.pid())
    }

    /// Peak resident set so far, KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        procfs::peak_rss_kib(self.pid())
    }

    /// Resident set now, KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        procfs::rss_kib(self.pid())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The addresses of the line serve logs once bound, anywhere in its `log`.
fn bound_addresses(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    log.lines()
        .find_map(sluice_integration::cli::bound_addresses)
}

/// Prometheus samples of serve's `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.rsplit_once(' '))
                .filter_map(|(name, value)| Some((name.to_owned(), value.trim().parse().ok()?)))
                .collect(),
        )
    }

    /// The samples of several replicas added up.
    pub fn sum(each: &[Metrics]) -> Metrics {
        let mut total = BTreeMap::new();
        for metrics in each {
            for (name, value) in &metrics.0 {
                *total.entry(name.clone()).or_insert(0.0) += value;
            }
        }
        Metrics(total)
    }

    /// The sample `name` (with its labels as written), or 0.
    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// Proxies whose stream has settled a change (the histogram's count).
    pub fn settled(&self) -> f64 {
        self.get("sluice_serve_change_to_ack_seconds_count")
    }

    /// Configs published.
    pub fn snapshots(&self) -> f64 {
        self.get("sluice_serve_snapshots_total")
    }

    /// `sluice_serve_<counter>_total{type="T"}` per xDS type.
    pub fn per_type(&self, counter: &str) -> BTreeMap<&'static str, f64> {
        ["CDS", "EDS", "LDS", "RDS", "ECDS"]
            .into_iter()
            .map(|t| {
                (
                    t,
                    self.get(&format!("sluice_serve_{counter}_total{{type=\"{t}\"}}")),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_bound_line_and_the_samples() {
        let log = "serve: ADS on 127.0.0.1:4000, admin on http://127.0.0.1:4001 (/healthz /readyz /metrics /status)\n";
        assert_eq!(
            bound_addresses(log),
            Some((
                "127.0.0.1:4000".parse().unwrap(),
                "127.0.0.1:4001".parse().unwrap()
            ))
        );
        let metrics = Metrics::parse(
            "# HELP x\nsluice_serve_pushes_total{type=\"CDS\"} 3\nsluice_serve_change_to_ack_seconds_count 7\n",
        );
        assert_eq!(metrics.settled(), 7.0);
        assert_eq!(metrics.per_type("pushes")["CDS"], 3.0);
        assert_eq!(metrics.per_type("pushes")["EDS"], 0.0);
    }
}
