//! The unmodified third-party clients (boto3, aws-cli, the AWS Encryption
//! SDK, SOPS, hvac) from the virtual environment `scripts/clients-venv`
//! builds, run under `env -i` so no real AWS or Vault configuration leaks in.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The clients' virtual environment: `$KEYWARD_CLIENTS_VENV`, else the
/// default of `scripts/clients-venv`. Missing: the test fails, saying how
/// to build it (`./scripts/test` does it first).
pub fn venv() -> PathBuf {
    let dir = std::env::var_os("KEYWARD_CLIENTS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/keyward-clients-venv"));
    assert!(
        dir.join("bin/python").exists() && dir.join("bin/sops").exists(),
        "the client virtual environment {} is missing: run scripts/clients-venv (./scripts/test does)",
        dir.display()
    );
    dir
}

/// Runs `script` (a `.py` with the venv's Python, else with bash) from
/// `tests/clients/` with only `vars` (plus PATH and HOME) set; returns its
/// output, failing with it unless it exits 0 and ends with `"ok": true`.
pub fn run(script: &str, home: &Path, vars: &[(&str, String)]) -> String {
    let venv = venv();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(script);
    let mut cmd = if script.ends_with(".py") {
        let mut c = Command::new(venv.join("bin/python"));
        c.arg(&path);
        c
    } else {
        let mut c = Command::new("bash");
        c.arg(&path);
        c
    };
    cmd.env_clear()
        .env("PATH", format!("{}:/usr/local/bin:/usr/bin:/bin", venv.join("bin").display()))
        .env("HOME", home)
        .env("LANG", "C.UTF-8");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().last().is_some_and(|l| l.starts_with("{\"ok\": true")),
        "{script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

/// Runs a Python snippet with the venv's Python and `vars`; its stdout, or
/// the failure with stderr.
pub fn python(code: &str, home: &Path, vars: &[(&str, String)]) -> Result<String, String> {
    let venv = venv();
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg("-c").arg(code).env_clear().env("PATH", format!("{}:/usr/bin:/bin", venv.join("bin").display()));
    cmd.env("HOME", home);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run python");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A free loopback port (bound and released: the server binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something listens on loopback `port` (a side listener is
/// bound after the gRPC one the test harness connects to first).
pub async fn wait_for(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// [`run`] on a blocking thread, so the server in the same runtime keeps serving.
pub async fn run_async(script: &'static str, home: &Path, vars: Vec<(&'static str, String)>) -> String {
    let home = home.to_path_buf();
    tokio::task::spawn_blocking(move || run(script, &home, &vars)).await.unwrap()
}
