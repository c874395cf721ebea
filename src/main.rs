//! Wiring only: parse the command line, load settings, run the chosen role.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use chat_analytics::app::{App, Role};
use chat_analytics::config::Settings;
use chat_analytics::deadletter::{read_dead_letters, DeadLetterStats};
use chat_analytics::enrich::{EnrichMetrics, Enricher};
use chat_analytics::ingest::hash_key;
use chat_analytics::storage::partitions::PartitionMaintainer;
use chat_analytics::supervisor::Restarts;
use chat_analytics::worker::{reenrich, replay_file, WorkerMetrics};
use chat_analytics::{shutdown, storage, telemetry};

use cli::{Cli, Command, DlqCommand};

mod cli;

/// glibc's malloc was ~17% of the service's CPU under load and its per-thread arenas kept
/// freed memory resident; jemalloc is cheaper here and returns memory
/// (docs/BENCHMARKS-HISTORY.md, tuning log step 1).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = settings.runtime.worker_threads {
        runtime.worker_threads(threads.get());
    }
    let runtime = match runtime.build() {
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
        Command::Serve => serve(&settings, Role::Serve).await,
        Command::Ingest => serve(&settings, Role::Ingest).await,
        Command::Worker => serve(&settings, Role::Worker).await,
        Command::Dlq {
            command: DlqCommand::Stats { path },
        } => {
            let file = read_dead_letters(&path)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&DeadLetterStats::of(&file))?
            );
            Ok(())
        }
        Command::Dlq {
            command: DlqCommand::Replay { path },
        } => replay(&settings, &path).await,
        Command::Migrate => {
            let pool = storage::connect_pool(&settings.postgres)?;
            let prepared = storage::prepare_database(
                &pool,
                &settings.storage,
                &settings.partitions,
                settings.postgres.analyst_password()?,
            )
            .await
            .context("migrate")?;
            println!("{}", serde_json::to_string_pretty(&prepared)?);
            Ok(())
        }
        Command::Partitions => {
            let pool = storage::connect_pool(&settings.postgres)?;
            let maintainer = PartitionMaintainer::new(pool, settings.partitions.clone());
            let report = maintainer.run_once(chrono::Utc::now().date_naive()).await?;
            println!("created: {:?}", report.created);
            for a in &report.archived {
                println!(
                    "archived {} ({} rows, {} bytes) to {}",
                    a.name,
                    a.rows,
                    a.bytes,
                    a.path.display()
                );
            }
            Ok(())
        }
        Command::Reenrich { limit } => {
            let pool = storage::connect_pool(&settings.postgres)?;
            let enricher = Enricher::new(&settings.nlp, EnrichMetrics::unregistered()?);
            let report = reenrich(&pool, &enricher, limit).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Loadgen(args) => {
            let report = loadgen::run(args).await?;
            println!("{}", report.summary());
            Ok(())
        }
        Command::NlpSim(args) => {
            let token = shutdown::on_signal().context("installing signal handlers")?;
            nlp_sim::run(args, token.cancelled_owned()).await?;
            Ok(())
        }
        Command::HashKey => {
            let mut key = String::new();
            std::io::stdin()
                .read_to_string(&mut key)
                .context("reading the key from stdin")?;
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
    let api = app
        .api_addr()
        .map_or_else(|| "-".to_owned(), |a| a.to_string());
    tracing::info!(%api, admin = %app.admin_addr()?, ?role, "started");
    app.run().await;
    tracing::info!("stopped");
    Ok(())
}

/// Replays dead letters through the same pipeline the worker runs, then prints a report.
async fn replay(settings: &Settings, path: &std::path::Path) -> anyhow::Result<()> {
    // Nothing serves these (no admin listener): the pipeline needs them to count into.
    let registry = prometheus::Registry::new();
    let metrics = WorkerMetrics::register(&registry, Restarts::register(&registry)?)?;
    let pool = storage::connect_pool(&settings.postgres)?;
    let token = shutdown::on_signal().context("installing signal handlers")?;
    let report = replay_file(settings, &metrics, pool, token, path).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    anyhow::ensure!(
        report.dead_lettered_again == 0,
        "{} message(s) failed again and were dead-lettered anew",
        report.dead_lettered_again
    );
    Ok(())
}
