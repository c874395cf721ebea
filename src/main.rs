//! Wiring only: parse the command line, load settings, run the chosen role.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use chat_analytics::app::{App, Role};
use chat_analytics::cli::{Cli, Command};
use chat_analytics::config::Settings;
use chat_analytics::ingest::hash_key;
use chat_analytics::{shutdown, storage, telemetry};

/// sysexits' EX_USAGE: the configuration or command line is wrong.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match load_settings(&cli) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("chat-analytics: {err:#}");
            return ExitCode::from(EX_USAGE);
        }
    };
    telemetry::init_logging(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("chat-analytics: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("chat-analytics: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_settings(cli: &Cli) -> anyhow::Result<Settings> {
    // The default path is optional (the defaults are compiled in); a path given
    // explicitly must exist.
    let explicit = cli.config != std::path::Path::new("config/default.toml");
    let file = (explicit || cli.config.exists()).then_some(cli.config.as_path());
    Ok(Settings::load(file)?)
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            tracing::warn!("serve: no worker is running yet; messages are accepted into Kafka only");
            serve(&settings, Role::Serve).await
        }
        Command::Ingest => serve(&settings, Role::Ingest).await,
        Command::Migrate => {
            let pool = storage::connect_pool(&settings.postgres)?;
            let applied = storage::migrate(&pool).await.context("migrate")?;
            println!("applied {} migration(s): {}", applied.len(), applied.join(", "));
            Ok(())
        }
        Command::HashKey => {
            let mut key = String::new();
            std::io::stdin().read_to_string(&mut key).context("reading the key from stdin")?;
            let key = key.trim();
            anyhow::ensure!(!key.is_empty(), "no key on stdin");
            println!("{}", hash_key(key));
            Ok(())
        }
    }
}

async fn serve(settings: &Settings, role: Role) -> anyhow::Result<()> {
    let token = shutdown::on_signal().context("installing signal handlers")?;
    let app = App::build(settings, role, token).await?;
    tracing::info!(api = %app.api_addr()?, admin = %app.admin_addr()?, ?role, "listening");
    app.run().await;
    tracing::info!("stopped");
    Ok(())
}
