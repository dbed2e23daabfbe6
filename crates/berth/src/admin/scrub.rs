//! `berth admin scrub`: start a scrub (re-read and re-verify every blob and manifest) and
//! follow it with a progress bar, read its history, findings and log, stop a run
//! (`/api/v2.0/system/scrub`).

use anyhow::{bail, Context as _};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::Api;
use super::output::{done, human, num, print_one, print_rows, Output};
use super::progress::{follow, print_history};

#[derive(Subcommand, Debug)]
pub enum ScrubCmd {
    /// Start a run; with --wait, follow it to its end and fail if it found anything
    Run {
        /// Quarantine what is corrupt or missing (a push of the same content heals it)
        #[arg(long)]
        repair: bool,
        /// Follow the run with a progress bar, list what it found, and exit with status 1 if
        /// it found anything (repaired or not)
        #[arg(long)]
        wait: bool,
    },
    /// One run's counters and status
    Status {
        /// The run's id
        id: i64,
    },
    /// Past runs, newest first
    History {
        #[arg(long, default_value_t = 1)]
        page: u64,
        #[arg(long, default_value_t = 20)]
        page_size: u64,
    },
    /// One run's log: its counters and every finding
    Log {
        /// The run's id
        id: i64,
    },
    /// Stop a queued or running run after its current batch
    Stop {
        /// The run's id
        id: i64,
    },
}

const RUN_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("STATUS", "job_status"),
    ("REPAIR", "repair"),
    ("PHASE", "phase"),
    ("BLOBS", "blobs_checked"),
    ("MANIFESTS", "manifests_checked"),
    ("FINDINGS", "findings"),
    ("REPAIRED", "repaired"),
    ("ERRORS", "errors"),
    ("CREATED", "creation_time"),
];

const FINDING_COLUMNS: &[(&str, &str)] = &[
    ("KIND", "kind"),
    ("DIGEST", "digest"),
    ("REPOSITORY", "repository"),
    ("TARGET", "target"),
    ("REPAIRED", "repaired"),
    ("DETAIL", "detail"),
];

/// Checked so far and in all (blobs and manifests: the run counted them when it was created).
fn progress(run: &Value) -> (u64, u64) {
    let done = num(run, "blobs_checked") + num(run, "manifests_checked");
    let total = num(run, "blobs_total") + num(run, "manifests_total");
    // Pushes during the run may add to what it checks.
    (done, total.max(done))
}

fn summary(run: &Value) -> String {
    format!(
        "{}: {} blobs ({}), {} manifests, {} findings ({} repaired), {} errors",
        run["phase"].as_str().unwrap_or("?"),
        num(run, "blobs_checked"),
        human(num(run, "bytes_checked")),
        num(run, "manifests_checked"),
        num(run, "findings"),
        num(run, "repaired"),
        num(run, "errors"),
    )
}

pub async fn scrub(api: &Api, out: Output, cmd: ScrubCmd) -> anyhow::Result<()> {
    match cmd {
        ScrubCmd::Run { repair, wait } => {
            let reply = api
                .call(
                    Method::POST,
                    "/system/scrub",
                    &[],
                    Some(json!({"repair": repair})),
                )
                .await?;
            let location = reply
                .location
                .context("the server did not say where the run is (no Location)")?;
            let path = location
                .split_once("/api/v2.0")
                .map_or(location.as_str(), |(_, p)| p)
                .to_owned();
            let id = path.rsplit('/').next().unwrap_or("?").to_owned();
            if !wait {
                done(
                    out,
                    &format!(
                        "scrub run {id} queued; follow it with `berth admin scrub status {id}`"
                    ),
                    json!({"id": id}),
                );
                return Ok(());
            }
            let run = follow(
                api,
                &path,
                "[{elapsed_precise}] [{bar:30}] {pos}/{len} (eta {eta}) {msg}",
                "job_status",
                |bar, run| {
                    let (pos, len) = progress(run);
                    bar.set_length(len);
                    bar.set_position(pos);
                    bar.set_message(format!(
                        "{} ({} read), {} findings",
                        run["phase"].as_str().unwrap_or("?"),
                        human(num(run, "bytes_checked")),
                        num(run, "findings"),
                    ));
                },
            )
            .await?;
            let findings = api.get_all(&format!("{path}/findings"), &[]).await?;
            match out {
                Output::Json => print_one(out, &json!({"run": run, "findings": findings}), &[]),
                Output::Table => {
                    println!(
                        "scrub run {id}: {}; {}",
                        run["job_status"].as_str().unwrap_or("?"),
                        summary(&run)
                    );
                    if !findings.is_empty() {
                        print_rows(out, &findings, FINDING_COLUMNS);
                    }
                }
            }
            if run["job_status"] != "Success" {
                bail!(
                    "scrub run {id} ended {}: {}",
                    run["job_status"].as_str().unwrap_or("?"),
                    run["last_error"].as_str().unwrap_or("no error recorded")
                );
            }
            if num(&run, "findings") > 0 {
                bail!(
                    "scrub run {id} found {} problems ({} repaired)",
                    num(&run, "findings"),
                    num(&run, "repaired")
                );
            }
            Ok(())
        }
        ScrubCmd::Status { id } => {
            let run = api.get(&format!("/system/scrub/{id}"), &[]).await?.body;
            let mut columns = RUN_COLUMNS.to_vec();
            columns.extend([
                ("BLOBS TOTAL", "blobs_total"),
                ("BYTES READ", "bytes_checked"),
                ("MANIFESTS TOTAL", "manifests_total"),
                ("LAST ERROR", "last_error"),
                ("UPDATED", "update_time"),
                ("ENDED", "end_time"),
            ]);
            print_one(out, &run, &columns);
            Ok(())
        }
        ScrubCmd::History { page, page_size } => {
            print_history(api, out, "/system/scrub", page, page_size, RUN_COLUMNS).await
        }
        ScrubCmd::Log { id } => {
            print!(
                "{}",
                api.get_text(&format!("/system/scrub/{id}/log")).await?
            );
            Ok(())
        }
        ScrubCmd::Stop { id } => {
            api.call(Method::PUT, &format!("/system/scrub/{id}"), &[], None)
                .await?;
            done(
                out,
                &format!("scrub run {id} stops after its current batch"),
                json!({"id": id}),
            );
            Ok(())
        }
    }
}
