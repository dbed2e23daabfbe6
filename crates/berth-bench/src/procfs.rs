//! A server process seen through `/proc`: memory, CPU time, and a background RSS sampler.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context};

/// Linux reports `utime`/`stime` in USER_HZ ticks, which is 100 on every mainstream platform.
const TICKS_PER_SECOND: f64 = 100.0;

/// A `kB` field of `/proc/PID/status`, in bytes.
fn status_field(pid: u32, key: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .ok_or_else(|| anyhow!("no {key} in /proc/{pid}/status"))?;
    let kb: u64 = line[key.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("parsing {line:?}"))?;
    Ok(kb * 1024)
}

/// Resident set size now, bytes.
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    status_field(pid, "VmRSS")
}

/// The part of the resident set that is the process's own memory (heap, stacks), bytes; the
/// rest is pages of files it maps (its binary and libraries), shared with the page cache.
pub fn rss_anon(pid: u32) -> anyhow::Result<u64> {
    status_field(pid, "RssAnon")
}

/// Peak resident set size since the process started, bytes.
pub fn hwm(pid: u32) -> anyhow::Result<u64> {
    status_field(pid, "VmHWM")
}

/// User plus system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces; fields resume after its closing parenthesis.
    let rest = &text[text.rfind(')').ok_or_else(|| anyhow!("odd stat line"))? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ... utime is field 14, stime 15 (1-based in proc(5)).
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(f.get(i - 3)
            .ok_or_else(|| anyhow!("short stat line"))?
            .parse::<u64>()? as f64)
    };
    Ok((tick(14)? + tick(15)?) / TICKS_PER_SECOND)
}

/// Samples a process's RSS every few milliseconds and keeps the largest value seen.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Start sampling `pid` every `every`.
    pub fn start(pid: u32, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(r) = rss(pid) {
                    m.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(every);
            }
        });
        Self {
            stop,
            max,
            handle: Some(handle),
        }
    }

    /// Stop and return the largest RSS seen, bytes.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.max.load(Ordering::Relaxed)
    }
}

/// Before/after readings of a server around one operation.
pub struct Watch {
    pid: u32,
    cpu_before: f64,
    sampler: RssSampler,
}

/// What a [`Watch`] saw.
pub struct Seen {
    /// Server CPU seconds (user + system) spent during the operation.
    pub cpu_seconds: f64,
    /// Largest RSS sampled during the operation, bytes.
    pub rss_max_sampled: u64,
    /// VmHWM afterwards (peak since server start), bytes.
    pub hwm: u64,
    /// RSS afterwards, bytes.
    pub rss_after: u64,
}

impl Watch {
    /// Start watching `pid`.
    pub fn start(pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            pid,
            cpu_before: cpu_seconds(pid)?,
            sampler: RssSampler::start(pid, Duration::from_millis(10)),
        })
    }

    /// Stop watching and read the results.
    pub fn finish(self) -> anyhow::Result<Seen> {
        let rss_max_sampled = self.sampler.finish();
        Ok(Seen {
            cpu_seconds: cpu_seconds(self.pid)? - self.cpu_before,
            rss_max_sampled,
            hwm: hwm(self.pid)?,
            rss_after: rss(self.pid)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss(me).unwrap() > 0);
        assert!(hwm(me).unwrap() >= rss(me).unwrap() / 2);
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        let w = Watch::start(me).unwrap();
        let seen = w.finish().unwrap();
        assert!(seen.hwm > 0);
    }
}
