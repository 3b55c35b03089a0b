//! The `klaxon` command: wiring only.

use clap::{Parser, Subcommand};
use klaxon::config::Config;
use klaxon::serve::{DEFAULT_ADDR, ServeOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Check every destination in the configuration: the bot, each bot channel, each incoming
    /// webhook (with a clearly marked test post). Exits non-zero when any fails.
    TestConnection {
        #[arg(long, short, env = "KLAXON_CONFIG_FILE")]
        config: Option<PathBuf>,
    },
    /// List the channels the bot is a member of (team, name, id, public or private), to fill in
    /// channel_id in klaxon.toml.
    Channels {
        #[arg(long, short, env = "KLAXON_CONFIG_FILE")]
        config: Option<PathBuf>,
    },
    /// List the notifications Mattermost refused for good, with the reason and the fix; with
    /// `retry`, send them again once fixed.
    Deliveries {
        #[arg(long, short, env = "KLAXON_CONFIG_FILE")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<DeliveriesCommand>,
    },
    /// Print the link an admin opens to install Klaxon's OAuth app (incidents.oauth): its token
    /// is then used for API calls when no bot token is configured.
    OauthInstallUrl {
        #[arg(long, short, env = "KLAXON_CONFIG_FILE")]
        config: Option<PathBuf>,
    },
    /// Who is on call now and next in each rotation, and the next handoffs.
    Oncall {
        #[arg(long, short, env = "KLAXON_CONFIG_FILE")]
        config: Option<PathBuf>,
        /// Show the rotations as at this time (RFC 3339, e.g. 2026-12-24T09:00:00Z) instead of now.
        #[arg(long)]
        at: Option<String>,
        /// How many handoffs to list per rotation.
        #[arg(long, default_value_t = 5)]
        handoffs: usize,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum DeliveriesCommand {
    /// Send a failed delivery (by job id), or all of them, again.
    Retry {
        job_id: Option<String>,
        #[arg(long, conflicts_with = "job_id")]
        all: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a file: list every problem with its field and fix, or print "ok" and a summary.
    Check { file: PathBuf },
    /// Validate a file and deploy it to the stack's table as the next version (AWS). The
    /// functions pick it up within a minute; nothing is changed if the file cannot be used.
    Push {
        file: PathBuf,
        /// The stack's DynamoDB table (the TableName output of `sam deploy`).
        #[arg(long, env = "KLAXON_TABLE")]
        table: String,
        /// Store secrets written as ${VAR} (taken from this shell's environment) in SSM Parameter
        /// Store under --prefix, and deploy the file with ${ssm:...} references to them.
        #[arg(long)]
        put_secrets: bool,
        /// Where secrets live in SSM; the stack lets the functions read only this prefix.
        #[arg(long, default_value = klaxon::deployed::DEFAULT_SECRETS_PREFIX)]
        prefix: String,
    },
    /// Print the configuration deployed in the stack's table (secrets are references, not values).
    Show {
        #[arg(long, env = "KLAXON_TABLE")]
        table: String,
    },
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
        Command::OauthInstallUrl { config } => {
            let Some(state) = load_state(config.as_deref()).await else { return ExitCode::FAILURE };
            match klaxon::chatops::oauth::authorize_link(&state, klaxon::chatops::oauth::INSTALL, "", "admin") {
                Ok(link) => {
                    println!("Open this link as a Mattermost admin within 15 minutes:\n{link}");
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    eprintln!("cannot make the install link: {why}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Oncall { config, at, handoffs } => {
            let config = match klaxon::serve::load_config(config.as_deref()) {
                Ok((c, _)) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let now = match at.as_deref().map(str::parse::<jiff::Timestamp>) {
                None => jiff::Timestamp::now(),
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    eprintln!("--at: {e}; write it like 2026-12-24T09:00:00Z");
                    return ExitCode::FAILURE;
                }
            };
            println!("{}", klaxon::escalation::on_call_text(&config, now, handoffs).replace("**", ""));
            ExitCode::SUCCESS
        }
        Command::TestConnection { config } => {
            let config = match klaxon::serve::load_config(config.as_deref()) {
                Ok((c, _)) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let checks = klaxon::notify::connection::test_connection(&config).await;
            for c in &checks {
                println!("{} {}", if c.ok { "ok  " } else { "FAIL" }, c.line);
            }
            if checks.iter().all(|c| c.ok) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Command::Channels { config } => {
            let config = match klaxon::serve::load_config(config.as_deref()) {
                Ok((c, _)) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match klaxon::notify::connection::list_channels(&config).await {
                Ok(rows) => {
                    println!("{:<20} {:<30} {:<26} type", "team", "channel", "channel_id");
                    for r in rows {
                        println!(
                            "{:<20} {:<30} {:<26} {}",
                            r.team,
                            r.name,
                            r.id,
                            if r.private { "private" } else { "public" }
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Deliveries { config, command } => {
            let Some(state) = load_state(config.as_deref()).await else { return ExitCode::FAILURE };
            let deliveries = state.deliveries();
            let failed = match klaxon::notify::retry::list(&deliveries).await {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("cannot read the failed deliveries: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let redrive_too = matches!(command, Some(DeliveriesCommand::Retry { all: true, .. }));
            let ids: Vec<String> = match command {
                None => {
                    if failed.is_empty() {
                        println!("no failed deliveries");
                    }
                    for f in &failed {
                        println!(
                            "{}  {}  {}  {}",
                            f.job.id(),
                            f.at.strftime("%Y-%m-%d %H:%M:%S"),
                            f.channel.as_deref().unwrap_or("-"),
                            f.reason
                        );
                    }
                    return ExitCode::SUCCESS;
                }
                Some(DeliveriesCommand::Retry { job_id: Some(id), .. }) => vec![id],
                Some(DeliveriesCommand::Retry { all: true, .. }) => {
                    failed.iter().map(|f| f.job.id().to_string()).collect()
                }
                Some(DeliveriesCommand::Retry { .. }) => {
                    eprintln!("name a job id (see `klaxon deliveries`), or --all");
                    return ExitCode::FAILURE;
                }
            };
            let mut code = ExitCode::SUCCESS;
            if redrive_too {
                match klaxon::notify::retry::redrive(state.notify_queue.as_ref()).await {
                    Ok(n) => println!("moved {n} dead-lettered notification(s) back to the queue"),
                    Err(e) => {
                        eprintln!("cannot move the dead letters back: {e}");
                        code = ExitCode::FAILURE;
                    }
                }
            }
            for id in ids {
                match klaxon::notify::retry::retry(&deliveries, state.notify_queue.as_ref(), &id).await {
                    Ok(()) => println!("queued {id} again"),
                    Err(e) => {
                        eprintln!("{id}: {e}");
                        code = ExitCode::FAILURE;
                    }
                }
            }
            code
        }
        Command::Config { command: ConfigCommand::Push { file, table, put_secrets, prefix } } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("cannot read {}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            let (repo, ssm) = klaxon::deployed::connect(&table).await;
            let pushed_by = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
            let options = klaxon::deployed::PushOptions { put_secrets, prefix, pushed_by };
            let env = |name: &str| std::env::var(name).ok();
            let origin = file.display().to_string();
            match klaxon::deployed::push(&text, &origin, &repo, &ssm, &env, &options).await {
                Ok(d) => {
                    println!(
                        "pushed {origin} as version {} to table {table}; the functions use it within a minute",
                        d.version
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config { command: ConfigCommand::Show { table } } => {
            let (repo, _) = klaxon::deployed::connect(&table).await;
            match repo.current().await {
                Ok(Some(d)) => {
                    print!("{}", klaxon::deployed::describe(&d, &table));
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    eprintln!(
                        "no configuration has been pushed to table {table}; run `klaxon config push klaxon.toml`"
                    );
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("cannot read the configuration from table {table}: {e}");
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

/// The state `serve` would build from the configuration; `None` after printing why not.
async fn load_state(config: Option<&std::path::Path>) -> Option<klaxon::app::AppState> {
    let state = match klaxon::serve::load_config(config) {
        Ok((c, _)) => klaxon::app::AppState::from_config(c).await,
        Err(e) => Err(e),
    };
    match state {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}
