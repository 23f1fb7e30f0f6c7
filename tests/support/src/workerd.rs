//! The workerd processes behind a `wrangler dev` server: finding them, measuring them, and
//! killing them (crash tests).
//!
//! `wrangler dev` runs two workerd processes under its node process: a small proxy that
//! listens on the `--port` given (it also serves the inspector), and the runtime that runs the
//! Worker and its Durable Objects. The runtime listens on a loopback port of its own that
//! serves the Worker directly; the benchmarks use it so that the proxy's relaying of every
//! frame is not counted (in production there is no such proxy). CPU time comes from
//! `/proc/<pid>/stat` (utime + stime), resident memory from `/proc/<pid>/status`.
//!
//! Shared by the end-to-end tests (`tests/e2e/reliability.rs`) and the benchmark tool
//! (`examples/bench/`) through the `roomkeeper-testkit` crate.

use std::process::Command;
use std::time::Duration;

/// The two workerd processes of one `wrangler dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workerd {
    /// The proxy listening on the server's public port.
    pub proxy: u32,
    /// The runtime that runs the Worker and its objects.
    pub runtime: u32,
    /// A loopback port on which the runtime serves the Worker directly (no proxy).
    pub direct_port: Option<u16>,
}

/// `(port, pid)` for every listening TCP socket owned by a process called `workerd`.
fn workerd_listeners() -> Vec<(u16, u32)> {
    let out = Command::new("ss")
        .args(["-ltnpH"])
        .output()
        .expect("run ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for line in text.lines() {
        if !line.contains("\"workerd\"") {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        let port = cols
            .get(3)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok());
        let pid = line
            .split("pid=")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok());
        if let (Some(port), Some(pid)) = (port, pid) {
            v.push((port, pid));
        }
    }
    v
}

/// Fields of `/proc/<pid>/stat` after the command name (field 3 onwards), or `None` if the
/// process is gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Finds the workerd processes of the `wrangler dev` listening on `port`: the proxy owns that
/// port; the runtime is the other workerd child of the same wrangler process.
pub fn find(port: u16) -> Option<Workerd> {
    find_serving(port, "/health", b"roomkeeper")
}

/// As [`find`], for any Worker: its direct port is the runtime's listener whose answer to
/// `GET path` contains `marker`.
pub fn find_serving(port: u16, path: &str, marker: &[u8]) -> Option<Workerd> {
    let listeners = workerd_listeners();
    let proxy = listeners.iter().find(|(p, _)| *p == port)?.1;
    let wrangler = parent(proxy)?;
    let runtime = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| {
            pid != proxy && parent(pid) == Some(wrangler) && comm(pid).as_deref() == Some("workerd")
        })?;
    let direct_port = listeners
        .iter()
        .filter(|(_, pid)| *pid == runtime)
        .map(|(p, _)| *p)
        .find(|p| serves(*p, path, marker));
    Some(Workerd {
        proxy,
        runtime,
        direct_port,
    })
}

/// Waits up to `wait` for [`find`] to succeed (the runtime starts after the proxy).
pub fn wait_find(port: u16, wait: Duration) -> Option<Workerd> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if let Some(w) = find(port).filter(|w| w.direct_port.is_some()) {
            return Some(w);
        }
        if std::time::Instant::now() > deadline {
            return find(port);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether `GET /health` on this loopback port answers as Roomkeeper.
fn serves(port: u16, path: &str, marker: &[u8]) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(marker.len()).any(|w| w == marker) {
            return true;
        }
    }
    false
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// CPU time (user + system) a process has used so far, in microseconds.
pub fn cpu_us(pid: u32) -> Option<u64> {
    cpu_split_us(pid).map(|(u, s)| u + s)
}

/// User and system CPU time a process has used so far, in microseconds.
pub fn cpu_split_us(pid: u32) -> Option<(u64, u64)> {
    let f = stat_fields(pid)?;
    // After the command name: state is index 0, so utime (field 14) is 11 and stime 12.
    let user: u64 = f.get(11)?.parse().ok()?;
    let sys: u64 = f.get(12)?.parse().ok()?;
    let us = |ticks: u64| ticks * 1_000_000 / clock_ticks();
    Some((us(user), us(sys)))
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Kills a process with SIGKILL, as a crash would.
pub fn kill9(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    // The signal is delivered at once, but a large process takes a moment to be torn down:
    // wait (at most 2 s) until it is gone, so "killed" means dead when this returns.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether a process still exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().map(String::as_str) != Some("Z"))
}
