//! The gateway process under measurement (started with a generated configuration, or
//! an already-running one), and what /proc says about it and about the machine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use callbridge::config::{Config, RouteConfig, TrunkConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::STEP;

/// The number the tool dials when the gateway routes to the tool's SIP echo.
pub const TRUNK_NUMBER: &str = "+15550000000";

/// A gateway process being measured.
pub struct Gateway {
    /// The process when the tool started it (held so it is killed when dropped).
    _child: Option<tokio::process::Child>,
    /// Its pid, for /proc.
    pub pid: u32,
    /// `ws://…/ws`.
    pub url: String,
    /// The generated configuration file (removed when dropped).
    config_file: Option<PathBuf>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(file) = &self.config_file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// What the started gateway's configuration says beyond loopback defaults.
pub struct GatewaySetup<'a> {
    /// HS256 secret the tool mints tokens with.
    pub secret: &'a str,
    /// The trunk all numbers are routed to (the tool's SIP echo); `None`: the built-in
    /// echo only.
    pub trunk: Option<SocketAddr>,
}

/// The configuration of a gateway started by the tool: everything on loopback, limits
/// wide enough for the load, no media inactivity timeout (silent calls are measured
/// too), logs at `warn`, call records in memory.
pub fn generated_config(setup: &GatewaySetup<'_>) -> Config {
    let mut config = Config::default();
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    config.server.listen = loopback(0);
    config.server.max_calls = 100_000;
    config.admin.listen = loopback(0);
    config.sip.listen = loopback(0);
    config.storage.path = ":memory:".into();
    config.auth.hs256_secret = setup.secret.to_owned().into();
    config.log.level = "warn".into();
    config.limits.max_sessions_per_ip = 100_000;
    config.http.max_connections = 100_000;
    config.http.max_connections_per_ip = 100_000;
    config.ratelimit.ws_per_ip_per_sec = 100_000;
    config.ratelimit.ws_burst = 100_000;
    config.media.inactivity_timeout = Duration::ZERO;
    config.media.allow_candidate_networks = vec!["127.0.0.0/8".into()];
    config.echo.enabled = true;
    if let Some(trunk) = setup.trunk {
        config.sip.trunks.push(TrunkConfig {
            name: "load-echo".into(),
            address: trunk.to_string(),
            ..TrunkConfig::default()
        });
        config.dialplan.routes.push(RouteConfig::new(
            r"^\+1[0-9]{10}$",
            vec!["load-echo".into()],
        ));
    }
    config
}

impl Gateway {
    /// Writes `config` to a file and starts `binary serve --config FILE`; waits for its
    /// "listening" line. `CALLBRIDGE_*` variables of the tool's environment reach it.
    pub async fn start(binary: &Path, config: &Config) -> anyhow::Result<Gateway> {
        let text = toml::to_string(config).context("cannot serialise the configuration")?;
        let file = std::env::temp_dir().join(format!(
            "callbridge-load-{}-{}.toml",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        let mut child = tokio::process::Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&file)
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
        Ok(Gateway {
            _child: Some(child),
            pid,
            url,
            config_file: Some(file),
        })
    }

    /// A gateway that is already running at `url` with process id `pid`.
    pub fn attach(url: String, pid: u32) -> anyhow::Result<Gateway> {
        if !Path::new(&format!("/proc/{pid}/stat")).exists() {
            bail!("no process {pid}: give the gateway's pid with --gateway-pid");
        }
        Ok(Gateway {
            _child: None,
            pid,
            url,
            config_file: None,
        })
    }

    /// A snapshot of its counters.
    pub fn sample(&self, hz: f64) -> anyhow::Result<ProcSample> {
        Ok(ProcSample {
            cpu: process_cpu(self.pid, hz)?,
            wakeups: wakeups(self.pid)?,
            rss_kib: rss_kib(self.pid)?,
            threads: thread_cpu(self.pid, hz),
        })
    }
}

/// CPU time so far of each thread of `pid`: thread id → (name, utime+stime).
fn thread_cpu(pid: u32, hz: f64) -> HashMap<u32, (String, Duration)> {
    let mut threads = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some((head, after)), Some(open)) = (stat.rsplit_once(')'), stat.find('(')) else {
            continue;
        };
        let name = head.get(open + 1..).unwrap_or_default().to_owned();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let cpu = Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / hz);
        threads.insert(tid, (name, cpu));
    }
    threads
}

/// Counters of one process at one moment.
#[derive(Debug, Clone)]
pub struct ProcSample {
    /// User+system CPU time so far.
    pub cpu: Duration,
    /// Voluntary+involuntary context switches of all its threads so far.
    pub wakeups: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// CPU time of each thread: thread id → (name, utime+stime).
    pub threads: HashMap<u32, (String, Duration)>,
}

/// User+system CPU time of process `pid` so far (`/proc/<pid>/stat`).
pub fn process_cpu(pid: u32, hz: f64) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // Fields after the command name (which may hold spaces) start at `state`.
    let after = stat.rsplit_once(')').context("/proc stat format")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / hz))
}

/// Voluntary+involuntary context switches of all the threads of `pid` so far (a
/// thread that ended meanwhile is not counted any more).
fn wakeups(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        for key in ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"] {
            total += status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// Resident set size of `pid`, KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
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

/// Whole-machine CPU time so far from the `cpu` line of /proc/stat.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    /// user + nice + system + irq + softirq: all the work done.
    pub busy: Duration,
    /// `nice` time alone (included in `busy`): niced work such as background builds
    /// lands here, unless the tool itself runs niced.
    pub nice: Duration,
    /// All of it, idle included (elapsed × cores).
    pub total: Duration,
}

impl MachineCpu {
    /// Reads /proc/stat.
    pub fn read(hz: f64) -> anyhow::Result<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("/proc/stat cpu line")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        let secs = |ticks: u64| Duration::from_secs_f64(ticks as f64 / hz);
        // user nice system idle iowait irq softirq steal
        Ok(MachineCpu {
            busy: secs(at(0) + at(1) + at(2) + at(5) + at(6)),
            nice: secs(at(1)),
            total: secs((0..8).map(at).sum()),
        })
    }

    /// What was used between `earlier` and `self`.
    pub fn since(&self, earlier: &MachineCpu) -> MachineCpu {
        MachineCpu {
            busy: self.busy.saturating_sub(earlier.busy),
            nice: self.nice.saturating_sub(earlier.nice),
            total: self.total.saturating_sub(earlier.total),
        }
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
