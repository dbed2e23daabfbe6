//! `berth admin quota`: each project's storage and artifact count limits and usage
//! (`/api/v2.0/quotas`).

use anyhow::{bail, Context as _};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{seg, Api};
use super::output::{done, human, print_one, print_rows, Output};

#[derive(Subcommand, Debug)]
pub enum QuotaCmd {
    /// Every project's quota and usage
    List,
    /// One project's quota and usage
    Show {
        /// The project
        project: String,
    },
    /// Set a project's limits (a limit left out keeps its value)
    Set {
        /// The project
        project: String,
        /// Most storage: bytes, or with a unit (500MB, 10GiB), or `unlimited`
        #[arg(long)]
        storage: Option<String>,
        /// Most artifacts, or `unlimited`
        #[arg(long)]
        count: Option<String>,
    },
}

/// A limit as the API takes it: `-1` for none.
fn limit(s: &str, sizes: bool) -> anyhow::Result<i64> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("unlimited") || s == "-1" {
        return Ok(-1);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("{s:?} is not a number"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" if sizes => 1e3,
        "mb" if sizes => 1e6,
        "gb" if sizes => 1e9,
        "tb" if sizes => 1e12,
        "kib" if sizes => 1024.0,
        "mib" if sizes => 1024.0 * 1024.0,
        "gib" if sizes => 1024.0 * 1024.0 * 1024.0,
        "tib" if sizes => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => bail!("{other:?} is not a unit here (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"),
    };
    let bytes = (number * factor).round();
    if !(0.0..9.0e18).contains(&bytes) {
        bail!("{s:?} is out of range");
    }
    Ok(bytes as i64)
}

/// A quota as a table row: sizes for people.
fn row(q: &Value) -> Value {
    let size = |v: &Value| match v.as_i64() {
        Some(-1) => "unlimited".to_owned(),
        Some(n) => human(n.max(0) as u64),
        None => String::new(),
    };
    let count = |v: &Value| match v.as_i64() {
        Some(-1) => "unlimited".to_owned(),
        Some(n) => n.to_string(),
        None => String::new(),
    };
    json!({
        "id": q["id"],
        "project": q["ref"]["name"],
        "used_storage": size(&q["used"]["storage"]),
        "hard_storage": size(&q["hard"]["storage"]),
        "used_count": count(&q["used"]["count"]),
        "hard_count": count(&q["hard"]["count"]),
        "updated": q["update_time"],
    })
}

const COLUMNS: &[(&str, &str)] = &[
    ("PROJECT", "project"),
    ("STORAGE", "used_storage"),
    ("LIMIT", "hard_storage"),
    ("ARTIFACTS", "used_count"),
    ("LIMIT", "hard_count"),
    ("UPDATED", "updated"),
];

async fn quota_id(api: &Api, project: &str) -> anyhow::Result<i64> {
    let p = api.get(&format!("/projects/{}", seg(project)), &[]).await?;
    p.body["project_id"]
        .as_i64()
        .context("the project has no id in the answer")
}

async fn show(api: &Api, out: Output, id: i64) -> anyhow::Result<()> {
    let q = api.get(&format!("/quotas/{id}"), &[]).await?.body;
    match out {
        Output::Json => print_one(out, &q, &[]),
        Output::Table => print_one(out, &row(&q), COLUMNS),
    }
    Ok(())
}

pub async fn quota(api: &Api, out: Output, cmd: QuotaCmd) -> anyhow::Result<()> {
    match cmd {
        QuotaCmd::List => {
            let all = api.get_all("/quotas", &[]).await?;
            match out {
                Output::Json => print_rows(out, &all, &[]),
                Output::Table => {
                    let rows: Vec<Value> = all.iter().map(row).collect();
                    print_rows(out, &rows, COLUMNS);
                }
            }
        }
        QuotaCmd::Show { project } => show(api, out, quota_id(api, &project).await?).await?,
        QuotaCmd::Set {
            project,
            storage,
            count,
        } => {
            if storage.is_none() && count.is_none() {
                bail!("give --storage, --count or both");
            }
            let mut hard = serde_json::Map::new();
            if let Some(s) = &storage {
                hard.insert("storage".into(), json!(limit(s, true)?));
            }
            if let Some(c) = &count {
                hard.insert("count".into(), json!(limit(c, false)?));
            }
            let id = quota_id(api, &project).await?;
            api.call(
                Method::PUT,
                &format!("/quotas/{id}"),
                &[],
                Some(json!({ "hard": hard })),
            )
            .await?;
            match out {
                Output::Table => {
                    done(out, &format!("quota of {project} set"), Value::Null);
                    show(api, out, id).await?;
                }
                Output::Json => show(api, out, id).await?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::limit;

    #[test]
    fn limits_read_units() {
        assert_eq!(limit("unlimited", true).unwrap(), -1);
        assert_eq!(limit("-1", false).unwrap(), -1);
        assert_eq!(limit("1500", true).unwrap(), 1500);
        assert_eq!(limit("500MB", true).unwrap(), 500_000_000);
        assert_eq!(limit("1.5 GiB", true).unwrap(), 1_610_612_736);
        assert_eq!(limit("10", false).unwrap(), 10);
        assert!(limit("10GiB", false).is_err(), "counts have no units");
        assert!(limit("lots", true).is_err());
        assert!(limit("5 parsecs", true).is_err());
        assert!(limit("99999999999TB", true).is_err());
    }
}
