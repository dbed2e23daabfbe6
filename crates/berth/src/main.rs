//! `berth`: the registry binary. `berth serve` runs the registry; `berth migrate` applies
//! metadata schema migrations; `berth config print` shows the effective configuration.

mod admin;
mod auth_config;
mod config;
mod oidc_setup;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Berth: an OCI container image registry in one binary.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file
    #[arg(long, global = true, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage projects, users, members, robots and read the audit log of a running server
    Admin(admin::AdminArgs),
    /// Run the registry
    Serve(config::Overrides),
    /// Apply pending metadata schema migrations, print the versions, and exit
    Migrate(config::Overrides),
    /// Inspect the configuration
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (file, environment and flags combined) as TOML
    Print(config::Overrides),
}

fn load(path: Option<&PathBuf>, over: &config::Overrides) -> anyhow::Result<config::Config> {
    let raw = match path {
        Some(p) => config::read_file(p)?,
        None => config::RawConfig::default(),
    };
    config::Config::resolve(raw, over)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Admin(args) => admin::run(args),
        Command::Serve(over) => {
            let cfg = load(cli.config.as_ref(), &over)?;
            serve::run(cfg)
        }
        Command::Migrate(over) => {
            let cfg = load(cli.config.as_ref(), &over)?;
            serve::migrate(&cfg)
        }
        Command::Config {
            command: ConfigCommand::Print(over),
        } => {
            let cfg = load(cli.config.as_ref(), &over)?;
            print!("{}", toml::to_string(&cfg)?);
            Ok(())
        }
    }
}
