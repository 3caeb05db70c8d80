//! The gateway process under measurement: started on loopback, read through /proc.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{SECRET, STEP};

/// A running gateway process.
pub struct Gateway {
    /// The process (killed when dropped).
    pub child: tokio::process::Child,
    /// Its pid, for /proc.
    pub pid: u32,
    /// `ws://…/ws`.
    pub url: String,
}

impl Gateway {
    /// Starts `binary serve` on embedded defaults with ephemeral loopback ports and
    /// limits wide enough for the load; waits for its "listening" line.
    pub async fn start(binary: &Path) -> anyhow::Result<Gateway> {
        let mut child = tokio::process::Command::new(binary)
            .arg("serve")
            .env("CALLBRIDGE_SERVER__LISTEN", "127.0.0.1:0")
            .env("CALLBRIDGE_ADMIN__LISTEN", "127.0.0.1:0")
            .env("CALLBRIDGE_SIP__LISTEN", "127.0.0.1:0")
            .env("CALLBRIDGE_STORAGE__PATH", ":memory:")
            .env("CALLBRIDGE_AUTH__HS256_SECRET", SECRET)
            .env("CALLBRIDGE_LIMITS__MAX_SESSIONS_PER_IP", "8192")
            .env("CALLBRIDGE_HTTP__MAX_CONNECTIONS_PER_IP", "8192")
            .env("CALLBRIDGE_RATELIMIT__WS_PER_IP_PER_SEC", "100000")
            .env("CALLBRIDGE_RATELIMIT__WS_BURST", "100000")
            .env("CALLBRIDGE_SERVER__MAX_CALLS", "100000")
            // Silent calls are measured too: never end them for lack of media.
            .env("CALLBRIDGE_MEDIA__INACTIVITY_TIMEOUT", "0s")
            .env("CALLBRIDGE_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id().context("gateway exited at once")?;
        let stdout = child.stdout.take().context("gateway stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(STEP, listening_url(&mut lines))
            .await
            .context("gateway did not start listening in time")??;
        // Keep reading its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Gateway { child, pid, url })
    }

    /// User+system CPU time of the process so far.
    pub fn cpu(&self, ticks_per_sec: f64) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name (which may hold spaces) start at `state`.
        let after = stat.rsplit_once(')').context("/proc stat format")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
            + fields.get(12).context("stime")?.parse::<u64>()?;
        Ok(Duration::from_secs_f64(ticks as f64 / ticks_per_sec))
    }

    /// Voluntary context switches of all the process's threads so far.
    pub fn wakeups(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))? {
            // A thread that ended meanwhile has no status any more.
            let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
                continue;
            };
            total += status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(total)
    }

    /// Resident set size of the process, KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("VmRSS")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("VmRSS value")?
            .parse()?)
    }
}

/// UDP sockets the process holds: (all, bound to port 5353, the mDNS port).
pub fn udp_sockets(pid: u32) -> anyhow::Result<(usize, usize)> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let target = std::fs::read_link(fd?.path()).unwrap_or_default();
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    let (mut all, mut mdns) = (0, 0);
    for table in ["udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            if inodes.contains(*inode) {
                all += 1;
                mdns += usize::from(local.ends_with(":14E9"));
            }
        }
    }
    Ok((all, mdns))
}

/// The `ws://` URL from the gateway's "callbridge listening: …" line.
async fn listening_url(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> anyhow::Result<String> {
    while let Some(line) = lines.next_line().await? {
        if let Some(rest) = line.strip_prefix("callbridge listening: ") {
            return Ok(rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string());
        }
    }
    bail!("gateway exited before listening")
}

/// Kernel clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub fn ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
