//! Figures: latency samples and their percentiles, CPU snapshots of workerd and of the load
//! generator itself, and the markdown table rows the scenarios print.

use std::time::{Duration, Instant};

use roomkeeper_testkit::workerd;

/// Microseconds since the process-wide base instant: the clock every timestamp in a frame
/// body uses (one process, so send and receive times are directly comparable).
pub fn now_us() -> u64 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Latency samples in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples(pub Vec<u64>);

impl Samples {
    /// Adds another set of samples.
    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// The `q` quantile (0–1) in milliseconds, nearest rank; 0 when empty.
    pub fn ms(&mut self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1] as f64 / 1000.0
    }

    /// `p50 / p99 / max` in ms, for a table cell.
    pub fn cell(&mut self) -> String {
        format!(
            "{:.1} / {:.1} / {:.1}",
            self.ms(0.50),
            self.ms(0.99),
            self.ms(1.0)
        )
    }
}

/// CPU time used so far by workerd's runtime, its proxy (when traffic goes through it) and
/// this load generator.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    runtime_us: u64,
    runtime_sys_us: u64,
    proxy_us: u64,
    me_us: u64,
    machine_us: u64,
    at: Instant,
}

/// CPU time every core of the machine has spent busy so far (`/proc/stat`), in µs.
fn machine_busy_us() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().next() else {
        return 0;
    };
    // cpu user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| *x)
        .sum();
    busy * 1_000_000 / workerd::clock_ticks()
}

/// CPU used between two snapshots.
#[derive(Debug, Clone, Copy)]
pub struct CpuDelta {
    /// workerd runtime (the Worker and its objects), µs.
    pub runtime_us: u64,
    /// The part of `runtime_us` spent in the kernel (socket writes, loopback TCP).
    pub runtime_sys_us: u64,
    /// wrangler's workerd proxy, µs (near zero when connecting directly).
    pub proxy_us: u64,
    /// This load generator, µs.
    pub me_us: u64,
    /// Everything else the machine ran meanwhile (other processes, interrupts), µs.
    pub other_us: u64,
    /// Wall time between the snapshots.
    pub wall: Duration,
}

impl Cpu {
    /// A snapshot now.
    pub fn now(w: &workerd::Workerd) -> Self {
        let (user, sys) = workerd::cpu_split_us(w.runtime).unwrap_or((0, 0));
        Self {
            runtime_us: user + sys,
            runtime_sys_us: sys,
            proxy_us: workerd::cpu_us(w.proxy).unwrap_or(0),
            me_us: workerd::cpu_us(std::process::id()).unwrap_or(0),
            machine_us: machine_busy_us(),
            at: Instant::now(),
        }
    }

    /// CPU used since `self`.
    pub fn since(&self, w: &workerd::Workerd) -> CpuDelta {
        let now = Self::now(w);
        let ours = (now.runtime_us + now.proxy_us + now.me_us)
            .saturating_sub(self.runtime_us + self.proxy_us + self.me_us);
        CpuDelta {
            other_us: now
                .machine_us
                .saturating_sub(self.machine_us)
                .saturating_sub(ours),
            runtime_us: now.runtime_us.saturating_sub(self.runtime_us),
            runtime_sys_us: now.runtime_sys_us.saturating_sub(self.runtime_sys_us),
            proxy_us: now.proxy_us.saturating_sub(self.proxy_us),
            me_us: now.me_us.saturating_sub(self.me_us),
            wall: now.at - self.at,
        }
    }
}

impl CpuDelta {
    /// Runtime CPU per unit of work, in µs.
    pub fn per(&self, units: u64) -> f64 {
        if units == 0 {
            return f64::NAN;
        }
        self.runtime_us as f64 / units as f64
    }

    /// Share of one core the rest of the machine used (other work competing for the cores).
    pub fn other_share(&self) -> f64 {
        self.other_us as f64 / self.wall.as_micros().max(1) as f64
    }

    /// Share of one core the runtime used.
    pub fn runtime_share(&self) -> f64 {
        self.runtime_us as f64 / self.wall.as_micros().max(1) as f64
    }
}

/// A markdown table: a header once, then rows as scenarios finish (printed at once so a long
/// run shows progress).
pub struct Table {
    columns: Vec<&'static str>,
    printed: bool,
    /// Every row printed so far (for the summary at the end).
    pub rows: Vec<Vec<String>>,
    title: String,
}

impl Table {
    /// A table with a title and column names.
    pub fn new(title: impl Into<String>, columns: &[&'static str]) -> Self {
        Self {
            columns: columns.to_vec(),
            printed: false,
            rows: Vec::new(),
            title: title.into(),
        }
    }

    fn header(&self) -> String {
        format!(
            "\n### {}\n\n| {} |\n|{}|",
            self.title,
            self.columns.join(" | "),
            self.columns
                .iter()
                .map(|_| "---")
                .collect::<Vec<_>>()
                .join("|")
        )
    }

    fn line(row: &[String]) -> String {
        format!("| {} |", row.join(" | "))
    }

    /// Prints (and keeps) one row.
    pub fn row(&mut self, cells: Vec<String>) {
        if !self.printed {
            println!("{}", self.header());
            self.printed = true;
        }
        println!("{}", Self::line(&cells));
        self.rows.push(cells);
    }

    /// The whole table as markdown (empty if no row was added).
    pub fn render(&self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        let mut s = self.header();
        for r in &self.rows {
            s.push('\n');
            s.push_str(&Self::line(r));
        }
        s.push('\n');
        s
    }
}

/// A number with thousands separators, for rates.
pub fn thousands(n: f64) -> String {
    let n = n.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut s = Samples((1..=100).map(|v| v * 1000).collect());
        assert_eq!(s.ms(0.5), 50.0);
        assert_eq!(s.ms(0.99), 99.0);
        assert_eq!(s.ms(1.0), 100.0);
        assert_eq!(Samples::default().ms(0.5), 0.0);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
