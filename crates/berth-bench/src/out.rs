//! Results as JSON lines on stdout: one object per measurement, carrying the `--meta` fields.

use std::io::Write;

use serde_json::{Map, Value};

/// Writes measurement lines.
pub struct Out {
    meta: Map<String, Value>,
}

impl Out {
    /// Lines will carry every `key=value` of `meta` as a string field.
    ///
    /// # Errors
    /// If an entry has no `=`.
    pub fn new(meta: &[String]) -> anyhow::Result<Self> {
        let mut m = Map::new();
        for kv in meta {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--meta {kv:?} is not key=value"))?;
            m.insert(k.to_owned(), Value::String(v.to_owned()));
        }
        Ok(Self { meta: m })
    }

    /// Print one line: `bench`, the meta fields, `metrics` (numbers the report aggregates)
    /// and `detail` (anything else worth keeping).
    pub fn emit(&self, bench: &str, metrics: Value, detail: Value) {
        let mut line = self.meta.clone();
        line.insert("bench".into(), Value::String(bench.into()));
        line.insert("metrics".into(), metrics);
        line.insert("detail".into(), detail);
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", Value::Object(line));
        let _ = stdout.flush();
    }
}

/// Round to 3 decimals for readable output.
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Median of `v` (mean of the middle two for an even count); `None` when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 0 {
        (s[m - 1] + s[m]) / 2.0
    } else {
        s[m]
    })
}

/// The `q` quantile (0..=1) of `v` by nearest rank; `None` when empty.
pub fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
    }
}
