//! `berth admin retention`: a project's retention policy (show, set, delete), runs (with a
//! progress bar over repositories), their history and their logs (`/api/v2.0/retentions`).

use std::io::Read as _;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{seg, Api};
use super::output::{done, num, print_one, print_rows, Output};
use super::progress::{follow, print_history};

#[derive(Subcommand, Debug)]
pub enum RetentionCmd {
    /// The project's policy: its rules and schedule
    Show {
        /// The project
        project: String,
    },
    /// Set the project's policy from a file holding Harbor's JSON (`{"rules": [...],
    /// "trigger": {"kind": "Schedule", "settings": {"cron": "0 0 0 * * *"}}}`); the scope is
    /// filled in
    Set {
        /// The project
        project: String,
        /// The policy's JSON file, or `-` for standard input
        #[arg(long, value_name = "FILE")]
        file: String,
        /// Run by itself on this schedule (six fields, `sec min hour day month weekday`, UTC;
        /// "" for none), instead of the file's trigger
        #[arg(long, value_name = "CRON")]
        schedule: Option<String>,
    },
    /// Delete the project's policy and its history
    Delete {
        /// The project
        project: String,
    },
    /// Run the policy now
    Run {
        /// The project
        project: String,
        /// Report what would be deleted; delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Follow the run to its end, with a progress bar over repositories
        #[arg(long)]
        wait: bool,
    },
    /// Past runs, newest first
    History {
        /// The project
        project: String,
        #[arg(long, default_value_t = 1)]
        page: u64,
        #[arg(long, default_value_t = 20)]
        page_size: u64,
    },
    /// What a run did: its tasks (one per repository), or their logs
    Log {
        /// The project
        project: String,
        /// The run's id
        run: i64,
        /// Print the log of this repository's task only
        #[arg(long)]
        repository: Option<String>,
        /// List the tasks with their counts instead of printing logs
        #[arg(long)]
        tasks: bool,
    },
}

const RUN_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("TRIGGER", "trigger"),
    ("STATUS", "status"),
    ("DRY RUN", "dry_run"),
    ("REPOSITORIES", "repositories"),
    ("TOTAL", "total"),
    ("RETAINED", "retained"),
    ("DELETED", "deleted"),
    ("ERRORS", "errors"),
    ("STARTED", "start_time"),
];

const TASK_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("REPOSITORY", "repository"),
    ("STATUS", "status"),
    ("TOTAL", "total"),
    ("RETAINED", "retained"),
    ("DELETED", "deleted"),
    ("ERRORS", "errors"),
];

/// The id of `project`'s policy, and the project's id.
async fn policy_of(api: &Api, project: &str) -> anyhow::Result<(Option<i64>, i64)> {
    let p = api
        .get(&format!("/projects/{}", seg(project)), &[])
        .await?
        .body;
    let id = p["metadata"]["retention_id"]
        .as_str()
        .and_then(|s| s.parse().ok());
    let project_id = p["project_id"]
        .as_i64()
        .context("the server did not give the project's id")?;
    Ok((id, project_id))
}

/// The id of `project`'s policy, or an error saying it has none.
async fn policy_id(api: &Api, project: &str) -> anyhow::Result<i64> {
    match policy_of(api, project).await?.0 {
        Some(id) => Ok(id),
        None => bail!(
            "project {project} has no retention policy: set one with `berth admin retention set`"
        ),
    }
}

fn summary(run: &Value) -> String {
    let verb = if run["dry_run"].as_bool() == Some(true) {
        "would delete"
    } else {
        "deleted"
    };
    format!(
        "{} artifacts, {} retained, {verb} {}, {} errors",
        num(run, "total"),
        num(run, "retained"),
        num(run, "deleted"),
        num(run, "errors"),
    )
}

/// The policy in `file` (`-`: standard input), with `project_id` as its scope and
/// `schedule`, if given, as its trigger.
fn policy_body(file: &str, project_id: i64, schedule: Option<String>) -> anyhow::Result<Value> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the policy from standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    let mut body: Value =
        serde_json::from_str(&text).with_context(|| format!("{file} is not JSON"))?;
    if !body.is_object() {
        bail!("{file} must hold a JSON object: {{\"rules\": [...]}}");
    }
    body["scope"] = json!({"level": "project", "ref": project_id});
    if let Some(cron) = schedule {
        body["trigger"] = json!({"kind": "Schedule", "settings": {"cron": cron}});
    }
    Ok(body)
}

pub async fn retention(api: &Api, out: Output, cmd: RetentionCmd) -> anyhow::Result<()> {
    match cmd {
        RetentionCmd::Show { project } => {
            let id = policy_id(api, &project).await?;
            let p = api.get(&format!("/retentions/{id}"), &[]).await?.body;
            if out == Output::Json {
                print_one(out, &p, &[]);
                return Ok(());
            }
            println!("policy {id} of project {project}");
            let cron = p["trigger"]["settings"]["cron"].as_str().unwrap_or("");
            if cron.is_empty() {
                println!("schedule: none (runs when asked)");
            } else {
                println!(
                    "schedule: {cron} (next {})",
                    p["trigger"]["settings"]["next_scheduled_time"]
                        .as_str()
                        .unwrap_or("-")
                );
            }
            let rules: Vec<Value> = p["rules"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .map(|r| {
                    let selectors = |list: &Value| -> String {
                        list.as_array()
                            .map_or(&[][..], Vec::as_slice)
                            .iter()
                            .map(|s| {
                                let untagged = s["extras"]
                                    .as_str()
                                    .is_some_and(|e| e.contains("\"untagged\":true"));
                                format!(
                                    "{} {}{}",
                                    s["decoration"].as_str().unwrap_or("?"),
                                    s["pattern"].as_str().unwrap_or("?"),
                                    if untagged { " +untagged" } else { "" }
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    let template = r["template"].as_str().unwrap_or("?");
                    let param = r["params"][template]
                        .as_u64()
                        .map_or(String::new(), |n| format!(" {n}"));
                    json!({
                        "id": r["id"],
                        "disabled": r["disabled"],
                        "keep": format!("{template}{param}"),
                        "tags": selectors(&r["tag_selectors"]),
                        "repositories": selectors(&r["scope_selectors"]["repository"]),
                    })
                })
                .collect();
            print_rows(
                out,
                &rules,
                &[
                    ("RULE", "id"),
                    ("DISABLED", "disabled"),
                    ("KEEP", "keep"),
                    ("TAGS", "tags"),
                    ("REPOSITORIES", "repositories"),
                ],
            );
            Ok(())
        }
        RetentionCmd::Set {
            project,
            file,
            schedule,
        } => {
            let (id, project_id) = policy_of(api, &project).await?;
            let body = policy_body(&file, project_id, schedule)?;
            let id = match id {
                Some(id) => {
                    api.call(Method::PUT, &format!("/retentions/{id}"), &[], Some(body))
                        .await?;
                    id
                }
                None => {
                    let reply = api
                        .call(Method::POST, "/retentions", &[], Some(body))
                        .await?;
                    reply
                        .created_path("policy")?
                        .rsplit('/')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .context("the policy's Location has no id")?
                }
            };
            done(
                out,
                &format!("retention policy {id} of project {project} set"),
                json!({"id": id}),
            );
            Ok(())
        }
        RetentionCmd::Delete { project } => {
            let id = policy_id(api, &project).await?;
            api.call(Method::DELETE, &format!("/retentions/{id}"), &[], None)
                .await?;
            done(
                out,
                &format!("retention policy {id} of project {project} deleted"),
                json!({"id": id}),
            );
            Ok(())
        }
        RetentionCmd::Run {
            project,
            dry_run,
            wait,
        } => {
            let id = policy_id(api, &project).await?;
            let reply = api
                .call(
                    Method::POST,
                    &format!("/retentions/{id}/executions"),
                    &[],
                    Some(json!({ "dry_run": dry_run })),
                )
                .await?;
            let path = reply.created_path("run")?;
            let run_id = path.rsplit('/').next().unwrap_or("?").to_owned();
            if !wait {
                done(
                    out,
                    &format!(
                        "retention run {run_id} queued; follow it with `berth admin retention \
                         history {project}`"
                    ),
                    json!({"id": run_id}),
                );
                return Ok(());
            }
            let run = follow(
                api,
                &path,
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} repositories  {msg}",
                "status",
                |bar, run| {
                    bar.set_length(num(run, "repositories"));
                    bar.set_position(num(run, "repositories_done"));
                    bar.set_message(summary(run));
                },
            )
            .await?;
            match out {
                Output::Json => print_one(out, &run, &[]),
                Output::Table => println!(
                    "retention run {run_id}{}: {}; {} repositories, {}",
                    if dry_run { " (dry run)" } else { "" },
                    run["status"].as_str().unwrap_or("?"),
                    num(&run, "repositories"),
                    summary(&run)
                ),
            }
            if run["status"] != "Success" {
                bail!(
                    "run {run_id} ended {}: {}",
                    run["status"].as_str().unwrap_or("?"),
                    run["last_error"].as_str().unwrap_or("no error recorded")
                );
            }
            Ok(())
        }
        RetentionCmd::History {
            project,
            page,
            page_size,
        } => {
            let id = policy_id(api, &project).await?;
            let path = format!("/retentions/{id}/executions");
            print_history(api, out, &path, page, page_size, RUN_COLUMNS).await
        }
        RetentionCmd::Log {
            project,
            run,
            repository,
            tasks,
        } => {
            let id = policy_id(api, &project).await?;
            let path = format!("/retentions/{id}/executions/{run}/tasks");
            let all = api.get_all(&path, &[]).await?;
            if tasks {
                print_rows(out, &all, TASK_COLUMNS);
                return Ok(());
            }
            let chosen: Vec<&Value> = all
                .iter()
                .filter(|t| {
                    repository
                        .as_deref()
                        .is_none_or(|r| t["repository"].as_str() == Some(r))
                })
                .collect();
            if chosen.is_empty() {
                match repository {
                    Some(r) => bail!("run {run} has no task for repository {r}"),
                    None => {
                        println!("run {run} has no tasks (yet)");
                        return Ok(());
                    }
                }
            }
            for (n, t) in chosen.iter().enumerate() {
                if n > 0 {
                    println!();
                }
                print!("{}", api.get_text(&format!("{path}/{}", t["id"])).await?);
            }
            Ok(())
        }
    }
}
