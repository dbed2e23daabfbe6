//! `berth admin gc`: start garbage collection and follow it with a progress bar, read its
//! history and logs, stop a run, and set the schedule (`/api/v2.0/system/gc`).

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::Api;
use super::output::{done, human, num, print_one, Output};
use super::progress::{follow, print_history};

#[derive(Subcommand, Debug)]
pub enum GcCmd {
    /// Start a run and follow it to its end
    Run {
        /// Report what would be deleted; delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Also delete manifests that no tag, index or live subject keeps
        #[arg(long)]
        delete_untagged: bool,
        /// Return once the run is queued instead of following it
        #[arg(long)]
        detach: bool,
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
    /// One run's log
    Log {
        /// The run's id
        id: i64,
    },
    /// Stop a queued or running run after its current batch
    Stop {
        /// The run's id
        id: i64,
    },
    /// Show or set the schedule
    Schedule {
        /// None (off), Hourly, Daily, Weekly or Custom; omit to show the schedule
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// For Custom: six fields, `sec min hour day month weekday` (UTC), e.g. "0 30 2 * * *"
        #[arg(long)]
        cron: Option<String>,
        /// Scheduled runs also delete untagged manifests
        #[arg(long)]
        delete_untagged: bool,
        /// Scheduled runs only report
        #[arg(long)]
        dry_run: bool,
    },
}

const RUN_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("KIND", "job_kind"),
    ("STATUS", "job_status"),
    ("DRY RUN", "dry_run"),
    ("STEP", "phase"),
    ("MANIFESTS", "manifests_deleted"),
    ("BLOBS", "blobs_deleted"),
    ("FREED", "freed_bytes"),
    ("ERRORS", "errors"),
    ("CREATED", "creation_time"),
];

fn summary(run: &Value) -> String {
    let verb = if run["dry_run"].as_bool() == Some(true) {
        "would free"
    } else {
        "freed"
    };
    format!(
        "step {}: looked at {}, {} untagged manifests, {} links, {} blobs, {verb} {}",
        run["phase"].as_str().unwrap_or("?"),
        num(run, "scanned"),
        num(run, "manifests_deleted"),
        num(run, "links_deleted"),
        num(run, "blobs_deleted"),
        human(num(run, "freed_bytes")),
    )
}

pub async fn gc(api: &Api, out: Output, cmd: GcCmd) -> anyhow::Result<()> {
    match cmd {
        GcCmd::Run {
            dry_run,
            delete_untagged,
            detach,
        } => {
            let body = json!({"schedule": {"type": "Manual"},
                "parameters": {"dry_run": dry_run, "delete_untagged": delete_untagged}});
            let reply = api
                .call(Method::POST, "/system/gc/schedule", &[], Some(body))
                .await?;
            let path = reply.created_path("run")?;
            let id = path.rsplit('/').next().unwrap_or("?").to_owned();
            if detach {
                done(
                    out,
                    &format!("garbage collection run {id} queued"),
                    json!({"id": id}),
                );
                return Ok(());
            }
            let run = follow(
                api,
                &path,
                "{spinner} [{elapsed_precise}] {msg}",
                "job_status",
                |bar, run| bar.set_message(summary(run)),
            )
            .await?;
            match out {
                Output::Json => print_one(out, &run, &[]),
                Output::Table => println!(
                    "garbage collection run {id}: {}; {}",
                    run["job_status"].as_str().unwrap_or("?"),
                    summary(&run)
                ),
            }
            if run["job_status"] != "Success" {
                bail!(
                    "run {id} ended {}: {}",
                    run["job_status"].as_str().unwrap_or("?"),
                    run["last_error"].as_str().unwrap_or("no error recorded")
                );
            }
            Ok(())
        }
        GcCmd::Status { id } => {
            let run = api.get(&format!("/system/gc/{id}"), &[]).await?.body;
            let mut columns = RUN_COLUMNS.to_vec();
            columns.extend([
                ("LINKS", "links_deleted"),
                ("LOOKED AT", "scanned"),
                ("GRACE SECONDS", "grace_seconds"),
                ("LAST ERROR", "last_error"),
                ("UPDATED", "update_time"),
                ("ENDED", "end_time"),
            ]);
            print_one(out, &run, &columns);
            Ok(())
        }
        GcCmd::History { page, page_size } => {
            print_history(api, out, "/system/gc", page, page_size, RUN_COLUMNS).await
        }
        GcCmd::Log { id } => {
            print!("{}", api.get_text(&format!("/system/gc/{id}/log")).await?);
            Ok(())
        }
        GcCmd::Stop { id } => {
            api.call(Method::PUT, &format!("/system/gc/{id}"), &[], None)
                .await?;
            done(
                out,
                &format!("garbage collection run {id} stops after its current batch"),
                json!({"id": id}),
            );
            Ok(())
        }
        GcCmd::Schedule { kind: None, .. } => {
            let s = api.get("/system/gc/schedule", &[]).await?.body;
            print_one(
                out,
                &s,
                &[
                    ("TYPE", "schedule.type"),
                    ("CRON", "schedule.cron"),
                    ("NEXT", "schedule.next_scheduled_time"),
                    ("DELETE UNTAGGED", "parameters.delete_untagged"),
                    ("DRY RUN", "parameters.dry_run"),
                    ("UPDATED", "update_time"),
                ],
            );
            Ok(())
        }
        GcCmd::Schedule {
            kind: Some(kind),
            cron,
            delete_untagged,
            dry_run,
        } => {
            let body = json!({"schedule": {"type": kind, "cron": cron},
                "parameters": {"delete_untagged": delete_untagged, "dry_run": dry_run}});
            api.call(Method::PUT, "/system/gc/schedule", &[], Some(body))
                .await?;
            done(
                out,
                "garbage collection schedule set",
                json!({"type": kind}),
            );
            Ok(())
        }
    }
}
