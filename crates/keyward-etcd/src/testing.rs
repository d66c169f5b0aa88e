//! Test support (feature `test-util`): a three-member etcd cluster on
//! loopback ports, started from Debian's `etcd` binary, killed when dropped.

use std::process::{Child, Command, Stdio};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Three etcd members on loopback, killed when dropped.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Child>,
    /// The members' client URLs.
    pub clients: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts the members (they elect a leader within a few seconds).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let cluster =
            (0..3).map(|i| format!("m{i}=http://127.0.0.1:{}", peers[i])).collect::<Vec<_>>().join(",");
        let members = (0..3)
            .map(|i| {
                Command::new("etcd")
                    .args(["--name", &format!("m{i}")])
                    .args(["--data-dir", dir.path().join(format!("m{i}")).to_str().unwrap()])
                    .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", clients[i])])
                    .args(["--advertise-client-urls", &format!("http://127.0.0.1:{}", clients[i])])
                    .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", peers[i])])
                    .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", peers[i])])
                    .args(["--initial-cluster", &cluster, "--initial-cluster-state", "new"])
                    .args(["--initial-cluster-token", "keyward-test"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("etcd (Debian: apt-get install etcd-server)")
            })
            .collect();
        let clients = clients.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
        Self { members, clients, _dir: dir }
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-KILL`) to member `member`.
    pub fn signal(&self, member: usize, signal: &str) {
        let pid = self.members[member].id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

impl Etcd {
    /// Waits until every member answers (at most 30 s), with `etcdctl`.
    pub fn wait_ready(&self) {
        let start = std::time::Instant::now();
        for url in &self.clients {
            loop {
                let ok = Command::new("etcdctl")
                    .args(["--endpoints", url, "--command-timeout=2s", "endpoint", "health"])
                    .env("ETCDCTL_API", "3")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(30),
                    "etcd member {url} never became healthy"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}
