//! Running `wrk --latency` and reading its report.

use std::process::Command;

use anyhow::{anyhow, bail, Context};

/// What one wrk run measured.
#[derive(Debug, Default, PartialEq)]
pub struct WrkResult {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Requests completed.
    pub requests: u64,
    /// Responses that were not 2xx or 3xx.
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors added up.
    pub socket_errors: u64,
}

/// A wrk duration such as `812.00us`, `1.23ms`, `2.00s` or `1.00m`, in milliseconds.
fn millis(s: &str) -> anyhow::Result<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        bail!("unknown wrk duration {s:?}")
    };
    Ok(num
        .parse::<f64>()
        .with_context(|| format!("wrk duration {s:?}"))?
        * scale)
}

/// Read wrk's text report (run with `--latency`).
///
/// # Errors
/// If the requests/sec line or the latency distribution is missing.
pub fn parse(text: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut saw_rps = false;
    let mut saw_p99 = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => {
                r.rps = v.parse()?;
                saw_rps = true;
            }
            ["50%", v] => r.p50_ms = millis(v)?,
            ["99%", v] => {
                r.p99_ms = millis(v)?;
                saw_p99 = true;
            }
            [n, "requests", "in", ..] => r.requests = n.parse()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx = n.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                r.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    if !saw_rps || !saw_p99 {
        bail!("could not read wrk output:\n{text}");
    }
    Ok(r)
}

/// Run wrk against `url` for `seconds` with `threads` and `connections`, sending `headers`,
/// using `method` (GET or HEAD).
///
/// # Errors
/// If wrk cannot be run or fails.
pub fn run(
    wrk: &str,
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    threads: u32,
    connections: u32,
    seconds: u32,
) -> anyhow::Result<(WrkResult, String)> {
    let mut cmd = Command::new(wrk);
    cmd.arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("5s")
        .arg("--latency");
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    let script = if method == "GET" {
        None
    } else {
        let p = std::env::temp_dir().join(format!(
            "berth-bench-{}-{}.lua",
            std::process::id(),
            method.to_ascii_lowercase()
        ));
        std::fs::write(&p, format!("wrk.method = \"{method}\"\n"))?;
        cmd.arg("-s").arg(&p);
        Some(p)
    };
    cmd.arg(url);
    let output = cmd.output();
    if let Some(p) = script {
        let _ = std::fs::remove_file(p);
    }
    let output = output.with_context(|| format!("running {wrk} (is wrk installed?)"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(anyhow!(
            "wrk failed ({}): {}{}",
            output.status,
            text,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok((parse(&text)?, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 10s test @ http://127.0.0.1:5000/v2/a/manifests/t
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  500.00us  30.00ms   90.00%
    Req/Sec    15.00k     1.00k   17.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    2.00ms
     99%    4.50ms
  300000 requests in 10.00s, 100.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  29999.50
Transfer/sec:     10.00MB
";

    #[test]
    fn reads_a_report() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(r.rps, 29999.5);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert_eq!(r.p99_ms, 4.5);
        assert_eq!(r.requests, 300_000);
        assert_eq!(r.non_2xx, 7);
        assert_eq!(r.socket_errors, 3);
        assert!(parse("nothing").is_err());
        assert_eq!(millis("1.50s").unwrap(), 1500.0);
    }
}
