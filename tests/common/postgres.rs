//! A throwaway PostgreSQL server for the tests: `initdb` into a temporary
//! directory, `pg_ctl start` on a free loopback port, `pg_ctl stop` on drop.
//!
//! PostgreSQL refuses to run as root; when the tests run as root (CI), the data
//! directory is handed to the `postgres` system user (or `nobody`) and the server
//! tools run under `runuser` (or `setpriv`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running server; stopped and deleted on drop.
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
    /// Holds the data directory.
    dir: tempfile::TempDir,
    /// `initdb`, `pg_ctl`, … live here.
    bin: PathBuf,
    /// The user the server runs as, when not ourselves.
    run_as: Option<String>,
}

fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn uid_gid(user: &str) -> Option<(u32, u32)> {
    let out = Command::new("id").arg("-u").arg(user).output().ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").arg("-g").arg(user).output().ok()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

fn has(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Postgres {
    /// Starts a server, or says why it cannot (PostgreSQL not installed, …).
    pub fn start() -> Result<Postgres, String> {
        let bin = find_bin().ok_or(
            "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb); \
             run scripts/deps.sh or apt-get install postgresql",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("callbridge-pg-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("tempdir: {e}"))?;
        let run_as = if is_root() {
            let user = ["postgres", "nobody"]
                .into_iter()
                .find(|u| uid_gid(u).is_some())
                .ok_or("running as root and no `postgres` or `nobody` user to run the server as")?;
            let (uid, gid) = uid_gid(user).ok_or("id")?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
            if !has("runuser") && !has("setpriv") {
                return Err("running as root and neither runuser nor setpriv is available".into());
            }
            Some(user.to_string())
        } else {
            None
        };
        let port = super::ports::port();
        let server = Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            bin,
            run_as,
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            server.dir.path().display()
        );
        let log = format!("{}/server.log", server.dir.path().display());
        server.run(
            "pg_ctl",
            &[
                "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
            ],
        )?;
        Ok(server)
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.path().display())
    }

    fn command(&self, tool: &str) -> Command {
        let tool = self.bin.join(tool);
        match &self.run_as {
            None => Command::new(tool),
            Some(user) if has("runuser") => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(tool);
                c
            }
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={user}"))
                    .arg(format!("--regid={user}"))
                    .arg("--init-groups")
                    .arg(tool);
                c
            }
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(tool)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(Path::new(&self.dir.path().join("server.log")))
            .unwrap_or_default();
        Err(format!(
            "{tool} failed ({}): {}{}\n{log}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}
