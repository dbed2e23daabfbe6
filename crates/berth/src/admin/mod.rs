//! `berth admin`: manage projects, users, members, robots, garbage collection, quotas,
//! retention policies and scrub, and read the audit log through the management API
//! (`/api/v2.0`) of a running Berth, over HTTP.

mod client;
mod gc;
mod output;
mod progress;
mod quota;
mod resources;
mod retention;
mod scrub;

use clap::{Args, Subcommand};

use client::Api;
pub use output::Output;

/// Where the server is, who calls it, how to print.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The server's base URL
    #[arg(
        long,
        global = true,
        env = "BERTH_URL",
        default_value = "http://127.0.0.1:5000"
    )]
    url: String,
    /// User name (or robot name, robot$...)
    #[arg(long, global = true, env = "BERTH_USERNAME")]
    username: Option<String>,
    /// Password (or robot secret)
    #[arg(long, global = true, env = "BERTH_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Projects
    Projects {
        #[command(subcommand)]
        command: resources::ProjectCmd,
    },
    /// Local users
    Users {
        #[command(subcommand)]
        command: resources::UserCmd,
    },
    /// Members of a project
    Members {
        #[command(subcommand)]
        command: resources::MemberCmd,
    },
    /// Robot accounts
    Robots {
        #[command(subcommand)]
        command: resources::RobotCmd,
    },
    /// The audit log
    Logs {
        #[command(subcommand)]
        command: resources::LogCmd,
    },
    /// Garbage collection: run (with a progress bar), history, logs, schedule
    Gc {
        #[command(subcommand)]
        command: gc::GcCmd,
    },
    /// Project quotas: usage and limits
    Quota {
        #[command(subcommand)]
        command: quota::QuotaCmd,
    },
    /// Scrub: re-read and re-verify every blob and manifest (with a progress bar), findings,
    /// history, logs
    Scrub {
        #[command(subcommand)]
        command: scrub::ScrubCmd,
    },
    /// Retention policies of a project: show, set, run (with a progress bar), history, logs
    Retention {
        #[command(subcommand)]
        command: retention::RetentionCmd,
    },
}

/// Run an admin command.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let api = Api::new(&args.url, args.username, args.password)?;
        let out = args.output;
        match args.command {
            AdminCommand::Projects { command } => resources::projects(&api, out, command).await,
            AdminCommand::Users { command } => resources::users(&api, out, command).await,
            AdminCommand::Members { command } => resources::members(&api, out, command).await,
            AdminCommand::Robots { command } => resources::robots(&api, out, command).await,
            AdminCommand::Logs { command } => resources::logs(&api, out, command).await,
            AdminCommand::Gc { command } => gc::gc(&api, out, command).await,
            AdminCommand::Quota { command } => quota::quota(&api, out, command).await,
            AdminCommand::Scrub { command } => scrub::scrub(&api, out, command).await,
            AdminCommand::Retention { command } => retention::retention(&api, out, command).await,
        }
    })
}
