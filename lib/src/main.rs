//! The `klaxon` command: wiring only.

use clap::{Parser, Subcommand};
use klaxon::config::Config;
use klaxon::serve::{DEFAULT_ADDR, ServeOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "klaxon", version, about = "Alerting and incident response for Mattermost teams")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every Klaxon function in one process, with the notifier in-process.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "KLAXON_ADDR", default_value = DEFAULT_ADDR)]
        addr: SocketAddr,
        /// Configuration file (default: ./klaxon.toml if it exists, else an empty configuration).
        #[arg(long, short, env = "KLAXON_CONFIG_FILE")]
        config: Option<PathBuf>,
        /// Data directory for the embedded store (overrides storage.data_dir).
        #[arg(long, env = "KLAXON_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a file: list every problem with its field and fix, or print "ok" and a summary.
    Check { file: PathBuf },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { addr, config, data_dir } => {
            klaxon::telemetry::init();
            match klaxon::serve::serve(ServeOptions { addr, config, data_dir }).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("klaxon serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config { command: ConfigCommand::Check { file } } => match Config::load(&file) {
            Ok(config) => {
                println!("ok: {} is valid", file.display());
                for line in config.summary().lines() {
                    println!("  {line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}
