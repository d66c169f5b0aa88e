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
    /// How each member was started (to start it again).
    commands: Vec<Vec<String>>,
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
        let commands: Vec<Vec<String>> = (0..3)
            .map(|i| {
                let data = dir.path().join(format!("m{i}")).display().to_string();
                let client = format!("http://127.0.0.1:{}", clients[i]);
                let peer = format!("http://127.0.0.1:{}", peers[i]);
                [
                    "--name",
                    &format!("m{i}"),
                    "--data-dir",
                    &data,
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                    "--initial-cluster",
                    &cluster,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "keyward-test",
                ]
                .map(str::to_string)
                .to_vec()
            })
            .collect();
        let members = commands.iter().map(|args| spawn(args)).collect();
        let clients = clients.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
        Self { members, commands, clients, _dir: dir }
    }

    /// Starts member `member` again (after `-KILL`) over its data folder.
    pub fn restart(&mut self, member: usize) {
        let _ = self.members[member].wait();
        self.members[member] = spawn(&self.commands[member]);
    }

    /// The index of the member that leads now (asked with `etcdctl`), if any.
    pub fn leader(&self) -> Option<usize> {
        self.clients.iter().position(|url| {
            Command::new("etcdctl")
                .args([
                    "--endpoints",
                    url,
                    "--command-timeout=2s",
                    "endpoint",
                    "status",
                    "--write-out=fields",
                ])
                .env("ETCDCTL_API", "3")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .is_some_and(|out| {
                    // "MemberID" : N and "Leader" : N, one field per line.
                    let field = |name: &str| {
                        out.lines()
                            .find(|l| l.starts_with(&format!("\"{name}\"")))
                            .and_then(|l| l.split(':').nth(1))
                            .map(|v| v.trim().to_string())
                    };
                    field("MemberID").is_some() && field("MemberID") == field("Leader")
                })
        })
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-KILL`) to member `member`.
    pub fn signal(&self, member: usize, signal: &str) {
        let pid = self.members[member].id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }
}

fn spawn(args: &[String]) -> Child {
    Command::new("etcd")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd (Debian: apt-get install etcd-server)")
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
