//! Long runs (garbage collection, scrub, retention): following one until it ends, with a
//! progress bar on a terminal, and listing their history.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::client::Api;
use super::output::{print_rows, Output};

/// Poll the run at `path` until its `status_key` says it ended, returning its last state.
/// On a terminal, `template` (indicatif's) is drawn on standard error and `draw` updates
/// the bar from each state polled; elsewhere nothing is drawn.
pub async fn follow(
    api: &Api,
    path: &str,
    template: &str,
    status_key: &str,
    draw: impl Fn(&ProgressBar, &Value),
) -> anyhow::Result<Value> {
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        ProgressBar::hidden()
    };
    loop {
        let run = api.get(path, &[]).await?.body;
        draw(&bar, &run);
        match run[status_key].as_str().unwrap_or("") {
            "Success" | "Error" | "Stopped" => {
                bar.finish_and_clear();
                return Ok(run);
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Print page `page` (of `page_size`) of the runs listed at `path`, newest first, with
/// `columns`.
pub async fn print_history(
    api: &Api,
    out: Output,
    path: &str,
    page: u64,
    page_size: u64,
    columns: &[(&str, &str)],
) -> anyhow::Result<()> {
    let q = [
        ("page", page.to_string()),
        ("page_size", page_size.to_string()),
    ];
    let runs = api.get(path, &q).await?.body;
    print_rows(out, runs.as_array().map_or(&[][..], Vec::as_slice), columns);
    Ok(())
}
