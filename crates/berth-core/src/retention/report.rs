//! A task's log: what a run did in one repository, as a text table (Harbor's task log), one
//! line per manifest with what became of it and why.

use berth_meta::{RetentionExecution, RetentionTask};

use super::evaluate::{short, Item};
use crate::Error;

/// A time in milliseconds since the epoch, to the second, in UTC.
fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// The log of `task` of `run`.
///
/// # Errors
/// [`Error::Internal`] if its items are not what Berth stored.
pub fn task_log(run: &RetentionExecution, task: &RetentionTask) -> Result<String, Error> {
    let items: Vec<Item> = serde_json::from_str(&task.items)
        .map_err(|e| Error::Internal(format!("retention task {}: {e}", task.id)))?;
    let verb = if run.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let mut out = format!(
        "retention run {} of policy {} ({}{}), repository {}\n\
         status {}: {} artifacts, {} retained, {verb} {}, {} errors\n\n",
        run.id,
        run.policy_id,
        run.trigger,
        if run.dry_run { ", dry run" } else { "" },
        task.repository,
        task.status,
        task.total,
        task.retained,
        task.deleted,
        task.errors,
    );
    let rows: Vec<[String; 7]> = items
        .iter()
        .map(|i| {
            let tags = if i.tags.is_empty() {
                "-".to_owned()
            } else {
                i.tags.join(",")
            };
            [
                short(&i.digest).to_owned(),
                tags,
                format!("{:?}", i.kind).to_lowercase(),
                when(i.pushed_ms),
                i.pulled_ms.map_or_else(|| "never".to_owned(), when),
                i.outcome.label(run.dry_run).to_owned(),
                i.why.clone(),
            ]
        })
        .collect();
    let head = [
        "DIGEST", "TAGS", "KIND", "PUSHED", "PULLED", "RESULT", "WHY",
    ]
    .map(str::to_owned);
    let mut widths = head.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&head).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    Ok(out)
}
