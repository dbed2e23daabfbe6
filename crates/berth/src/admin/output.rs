//! Printing replies: JSON as received, or a table of chosen fields in aligned columns.

use serde_json::Value;

/// How to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The API's JSON.
    Json,
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The value at a dotted path (`metadata.public`, `tags.name` maps over an array).
fn field(v: &Value, path: &str) -> Value {
    let mut cur = v.clone();
    for part in path.split('.') {
        cur = match cur {
            Value::Array(items) => Value::Array(items.iter().map(|i| i[part].clone()).collect()),
            other => other[part].clone(),
        };
    }
    cur
}

/// Print `rows` as a table with `columns` (`(header, field path)`), or as JSON.
pub fn print_rows(out: Output, rows: &[Value], columns: &[(&str, &str)]) {
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(rows).unwrap_or_default());
        return;
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|(_, f)| cell(&field(r, f))).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(h.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(columns.iter().map(|(h, _)| (*h).to_owned()).collect());
    for r in table {
        line(r);
    }
}

/// Print one object as `key: value` lines, or as JSON.
pub fn print_one(out: Output, v: &Value, columns: &[(&str, &str)]) {
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    for (h, f) in columns {
        println!("{h}: {}", cell(&field(v, f)));
    }
}

/// Print a short confirmation (table) or a JSON object.
pub fn done(out: Output, message: &str, json: Value) {
    match out {
        Output::Table => println!("{message}"),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        ),
    }
}

/// The number at `key` of a reply, 0 if there is none.
pub fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// `n` bytes for people: `1.5 GiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
