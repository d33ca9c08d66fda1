//! A real etcd cluster for the store and control-plane tests: N members of Debian's etcd
//! (`etcd-server`, which `cargo xtask test` installs) on loopback ports, each in its own
//! temporary data directory, killed and removed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The etcd binary: `$ETCD_BIN`, else `etcd` on PATH. Missing is an error that says how to
/// install it (CI installs it; a test never skips for want of it).
pub fn binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ETCD_BIN") {
        return Ok(bin.into());
    }
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match found {
        Ok(_) => Ok("etcd".into()),
        Err(_) => bail!(
            "etcd is not installed: run `cargo xtask setup` (Debian etcd-server), or set ETCD_BIN"
        ),
    }
}

/// One member's process and ports.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A running etcd cluster.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

/// Whether the member on `port` says it is healthy (etcd's `/health`: true once the cluster
/// has a leader and the member can serve). Plain HTTP/1.1 on a socket: the harness library
/// stays free of the etcd client, whose build needs protoc.
fn health(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.contains("\"health\":\"true\"")
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdCluster {
    /// Starts `size` members as one new cluster and waits until it answers (a write through
    /// every member). A member that loses its port to another process between the probe and
    /// its start makes the attempt fail; the cluster is then started again on new ports.
    pub fn start(size: usize) -> Result<EtcdCluster> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(size) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three attempts"))
    }

    fn try_start(size: usize) -> Result<EtcdCluster> {
        let binary = binary()?;
        let dir = tempfile::tempdir()?;
        let mut members = Vec::new();
        for i in 0..size {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_port()?,
                peer_port: free_port()?,
                child: None,
            });
        }
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let mut cluster = EtcdCluster { members, dir };
        for i in 0..size {
            cluster.spawn(&binary, i, &initial.join(","))?;
        }
        cluster.wait_healthy(Duration::from_secs(60))?;
        Ok(cluster)
    }

    fn spawn(&mut self, binary: &PathBuf, i: usize, initial_cluster: &str) -> Result<()> {
        let data = self.dir.path().join(&self.members[i].name);
        let log = std::fs::File::create(
            self.dir
                .path()
                .join(format!("{}.log", self.members[i].name)),
        )?;
        let m = &mut self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(binary)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "sluice-test"])
            // Quicker leader election on loopback; the defaults are for real networks.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        m.child = Some(child);
        Ok(())
    }

    fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.members.len() {
            loop {
                if let Some(child) = self.members[i].child.as_mut()
                    && let Some(status) = child.try_wait()?
                {
                    bail!(
                        "etcd member {} exited ({status}):\n{}",
                        self.members[i].name,
                        self.log(i)
                    );
                }
                let healthy = health(self.members[i].client_port);
                if healthy {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "etcd member {} not healthy in {timeout:?}:\n{}",
                        self.members[i].name,
                        self.log(i)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Member `i`'s log (stderr).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.log", self.members[i].name)),
        )
        .unwrap_or_default()
    }

    /// Member `i`'s client URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// The store URL naming every member: `etcd://127.0.0.1:A,127.0.0.1:B,...` plus `prefix`.
    pub fn store_url(&self, prefix: &str) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        format!("etcd://{}{prefix}", hosts.join(","))
    }

    /// Kills member `i` (SIGKILL, as a crash).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills every member: the store is unreachable until [`EtcdCluster::restart`].
    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Starts the killed members again on their ports and data, and waits for the cluster.
    pub fn restart(&mut self) -> Result<()> {
        let binary = binary()?;
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.spawn(&binary, i, &initial.join(","))?;
            }
        }
        self.wait_healthy(Duration::from_secs(60))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
