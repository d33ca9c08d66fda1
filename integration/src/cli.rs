//! The `sluice` CLI as users run it: a separate process, built from this checkout.
//!
//! Some behaviours only show with a real process: a control-plane replica killed by PID (as a
//! crash or an OOM kill ends it) must leave its Envoys to fail over, with nothing in the test
//! process closing its sockets politely.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// The `sluice` executable of this checkout, built once per test process with the workspace's
/// cargo (the same profile and target directory as the tests).
pub fn sluice_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build() -> Result<PathBuf> {
    let out = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "sluice", "--message-format=json"])
        .current_dir(crate::repo_root())
        .stderr(Stdio::inherit())
        .output()
        .context("run cargo build -p sluice")?;
    if !out.status.success() {
        bail!("cargo build -p sluice failed ({})", out.status);
    }
    // cargo names every artifact it built or found fresh; the binary target's `executable`.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "sluice")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| anyhow!("cargo build -p sluice named no `sluice` executable"))
}

/// `sluice serve` running as its own process, on ports the OS chose.
pub struct ServeProcess {
    child: Child,
    /// The ADS address it bound.
    pub xds: SocketAddr,
    /// The admin address it bound (/healthz, /readyz, /metrics, /status).
    pub admin: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl ServeProcess {
    /// Starts `sluice serve ARGS --xds-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0` and waits
    /// (up to 60 s) for the line naming the addresses it bound.
    pub fn start(args: &[&str]) -> Result<ServeProcess> {
        let mut child = Command::new(sluice_binary()?)
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
            .stderr(Stdio::piped())
            .spawn()
            .context("start sluice serve")?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (bound_tx, bound_rx) = mpsc::channel();
        drain_lines(stderr, Arc::clone(&log), bound_tx, bound_addresses);
        match bound_rx.recv_timeout(Duration::from_secs(60)) {
            Ok((xds, admin)) => Ok(ServeProcess {
                child,
                xds,
                admin,
                log,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = log.lock().expect("log").clone();
                bail!("sluice serve did not say what it bound in 60 s:\n{log}")
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Kills it with SIGKILL, by PID, as a crash or the OOM killer would: no goodbye to its
    /// proxies, its sockets closed by the kernel.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `sluice register` running as its own process, as a VM's service manager runs it: joined
/// once it has said so, and stopped with SIGTERM (what `systemctl stop` sends).
pub struct RegisterProcess {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl RegisterProcess {
    /// Starts `sluice register ARGS` and waits (up to 60 s) for its `registered ...` line.
    pub fn start(args: &[&str]) -> Result<RegisterProcess> {
        let mut child = Command::new(sluice_binary()?)
            .arg("register")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start sluice register")?;
        let out = Arc::new(Mutex::new(String::new()));
        let (joined_tx, joined_rx) = mpsc::channel();
        let joined = |line: &str| line.starts_with("registered ").then_some(());
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        drain_lines(stdout, Arc::clone(&out), joined_tx.clone(), joined);
        drain_lines(stderr, Arc::clone(&out), joined_tx, joined);
        let mut process = RegisterProcess { child, out };
        if joined_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            process.kill();
            bail!(
                "sluice register did not join in 60 s:\n{}",
                process.output()
            );
        }
        Ok(process)
    }

    /// What it printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.out.lock().expect("output").clone()
    }

    /// Sends SIGTERM and waits (up to 120 s) for it to leave and exit; its exit status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("run kill -TERM")?;
        if !sent.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "sluice register did not exit after SIGTERM:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it with SIGKILL (a crash: no leaving; the lease lapses).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RegisterProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Drains `stream` line by line into `log` for the process's whole life (a full pipe would
/// block it; the log is kept for failure messages), sending what `found` finds in a line.
fn drain_lines<T: Send + 'static>(
    stream: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<String>>,
    sender: mpsc::Sender<T>,
    found: fn(&str) -> Option<T>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Some(value) = found(&line) {
                let _ = sender.send(value);
            }
            let mut log = log.lock().expect("log");
            log.push_str(&line);
            log.push('\n');
        }
    });
}

/// The addresses in serve's startup line:
/// `serve: ADS on 127.0.0.1:P, admin on http://127.0.0.1:Q (...)`; `None` for any other line.
pub fn bound_addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.strip_prefix("serve: ADS on ")?;
    let (xds, rest) = rest.split_once(", admin on http://")?;
    let admin = rest.split_whitespace().next()?;
    Some((xds.parse().ok()?, admin.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_startup_line() {
        let (xds, admin) = bound_addresses(
            "serve: ADS on 127.0.0.1:41000, admin on http://127.0.0.1:41001 (/healthz /readyz /metrics /status)",
        )
        .expect("parsed");
        assert_eq!(xds.port(), 41000);
        assert_eq!(admin.port(), 41001);
        assert_eq!(bound_addresses("serve: config 1 loaded"), None);
    }
}
