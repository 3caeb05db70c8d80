//! Measuring windows over the gateway, the machine and the tool itself, and the small
//! statistics the reports use.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::gateway::{Gateway, MachineCpu, ProcSample, process_cpu};

/// Everything read at one moment.
#[derive(Clone)]
pub struct Snapshot {
    at: Instant,
    gateway: ProcSample,
    machine: MachineCpu,
    tool_cpu: Duration,
}

impl Snapshot {
    /// Reads the gateway's, the machine's and this process's counters.
    pub fn take(gw: &Gateway, hz: f64) -> anyhow::Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            gateway: gw.sample(hz)?,
            machine: MachineCpu::read(hz)?,
            tool_cpu: process_cpu(std::process::id(), hz)?,
        })
    }

    /// The gateway's CPU time so far.
    pub fn gateway_cpu(&self) -> Duration {
        self.gateway.cpu
    }

    /// The gateway's RSS at this moment, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.gateway.rss_kib
    }

    /// Per-call figures for `calls` calls between `self` (earlier) and `later`, with
    /// the gateway's RSS growth counted from `idle_rss_kib`.
    pub fn window(&self, later: &Snapshot, calls: usize, idle_rss_kib: u64) -> Window {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let m = calls.max(1) as f64;
        let share = |d: Duration| d.as_secs_f64() / secs * 100.0;
        let machine = later.machine.since(&self.machine);
        let gateway_cpu = later.gateway.cpu.saturating_sub(self.gateway.cpu);
        let tool_cpu = later.tool_cpu.saturating_sub(self.tool_cpu);
        Window {
            calls,
            secs,
            gateway_cpu_pct_per_call: share(gateway_cpu) / m,
            gateway_cpu_pct: share(gateway_cpu),
            machine_cpu_pct_per_call: share(machine.busy) / m,
            machine_cpu_pct: share(machine.busy),
            machine_nice_pct: share(machine.nice),
            tool_cpu_pct: share(tool_cpu),
            wakeups_per_call_sec: later.gateway.wakeups.saturating_sub(self.gateway.wakeups) as f64
                / secs
                / m,
            rss_kib: later.gateway.rss_kib,
            rss_kib_per_call: later.gateway.rss_kib.saturating_sub(idle_rss_kib) as f64 / m,
            gateway_threads: thread_shares(&self.gateway, &later.gateway, secs),
            loadavg: loadavg(),
        }
    }
}

/// Figures over one measuring window. CPU shares are in % of one core.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// Calls up during the window.
    pub calls: usize,
    /// Its length, seconds.
    pub secs: f64,
    /// Gateway process utime+stime per call.
    pub gateway_cpu_pct_per_call: f64,
    /// Gateway process utime+stime in all.
    pub gateway_cpu_pct: f64,
    /// Whole machine user+nice+system+irq+softirq per call: gateway, the tool
    /// (clients and SIP echo), kernel network work and anything else running.
    pub machine_cpu_pct_per_call: f64,
    /// The same in all.
    pub machine_cpu_pct: f64,
    /// Whole machine `nice` time in all (included above): other niced work such as
    /// builds, or the tool and gateway themselves when run with `nice`.
    pub machine_nice_pct: f64,
    /// This tool's own utime+stime in all (clients, SIP echo).
    pub tool_cpu_pct: f64,
    /// Voluntary+involuntary context switches of the gateway's threads per call-second.
    pub wakeups_per_call_sec: f64,
    /// Gateway RSS at the end, KiB.
    pub rss_kib: u64,
    /// Gateway RSS growth over its idle RSS per call, KiB.
    pub rss_kib_per_call: f64,
    /// The gateway's CPU by thread name (threads of one name summed), % of a core,
    /// busiest first.
    pub gateway_threads: Vec<(String, f64)>,
    /// /proc/loadavg at the end (1, 5, 15 min).
    pub loadavg: [f64; 3],
}

/// CPU shares by thread name (trailing digits dropped) between two samples (a thread
/// absent from `earlier` started within the window and counts from zero).
fn thread_shares(earlier: &ProcSample, later: &ProcSample, secs: f64) -> Vec<(String, f64)> {
    let mut by_name: std::collections::BTreeMap<&str, f64> = Default::default();
    for (tid, (name, cpu)) in &later.threads {
        let before = earlier.threads.get(tid).map_or(Duration::ZERO, |(_, c)| *c);
        // Per-object threads ("hloop 7625…" in Janus) are summed under one name.
        let name = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ' || c == '-');
        *by_name.entry(name).or_default() +=
            cpu.saturating_sub(before).as_secs_f64() / secs * 100.0;
    }
    let mut shares: Vec<(String, f64)> = by_name
        .into_iter()
        .filter(|(_, pct)| *pct > 0.0)
        .map(|(name, pct)| (name.to_owned(), pct))
        .collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    shares
}

/// The 1/5/15-minute load averages.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut v = text.split_whitespace().filter_map(|f| f.parse().ok());
    [
        v.next().unwrap_or(0.0),
        v.next().unwrap_or(0.0),
        v.next().unwrap_or(0.0),
    ]
}

/// p50/p99/max of some durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// Of `values` (any order); zeros when empty.
    pub fn of(values: impl IntoIterator<Item = Duration>) -> Percentiles {
        let mut v: Vec<Duration> = values.into_iter().collect();
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort();
        let rank = |p: usize| (v.len() * p).div_ceil(100).max(1) - 1;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Percentiles {
            p50_ms: ms(v[rank(50)]),
            p99_ms: ms(v[rank(99)]),
            max_ms: ms(v[v.len() - 1]),
        }
    }
}

/// "median (min–max)" of repeated figures, or the one figure.
pub fn spread(values: &[f64], decimals: usize) -> String {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(f64::total_cmp);
    let median = format!("{:.decimals$}", v[v.len() / 2]);
    let (low, high) = (
        format!("{:.decimals$}", v[0]),
        format!("{:.decimals$}", v[v.len() - 1]),
    );
    if low == high {
        median
    } else {
        format!("{median} ({low}–{high})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let p = Percentiles::of((1..=100).map(Duration::from_millis));
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (50.0, 99.0, 100.0));
        let one = Percentiles::of([Duration::from_millis(7)]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
    }

    #[test]
    fn spread_shows_median_and_range() {
        assert_eq!(spread(&[3.0, 1.0, 2.0], 1), "2.0 (1.0–3.0)");
        assert_eq!(spread(&[0.25], 2), "0.25");
        assert_eq!(spread(&[151.0, 151.2], 0), "151");
        assert_eq!(spread(&[], 2), "-");
    }
}
