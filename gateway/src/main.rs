//! The `portcullis` command: glue between the command line and the library.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use portcullis::config::{self, Format};
use portcullis::node::{self, NodeSettings};
use portcullis::plan::{self, ApplyOptions};
use portcullis::store::{Store, StoreLocation, assemble};

#[derive(Parser)]
#[command(name = "portcullis", version, about = "Portcullis API gateway")]
struct Cli {
    /// Directory for the embedded store (SQLite) and other local state.
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_DATA_DIR",
        default_value = "portcullis-data"
    )]
    data_dir: PathBuf,
    /// Configuration store URL: postgres://… for PostgreSQL, sqlite://PATH for a SQLite file.
    /// Defaults to SQLite in the data directory.
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_STORE_URL",
        hide_env_values = true
    )]
    store: Option<String>,
    /// Log format on standard error.
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gateway node.
    Serve(Box<NodeSettings>),
    /// Apply a declarative configuration file (YAML or JSON) to the store.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Print the plan as a diff and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete collections and clients that the file does not mention.
        #[arg(long)]
        prune: bool,
    },
    /// Print the whole stored configuration in a form `apply` accepts unchanged.
    Export {
        #[arg(long, default_value = "yaml")]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Check a configuration file without touching the store.
    Validate {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("can start the async runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let location = || StoreLocation::resolve(cli.store.as_deref(), &cli.data_dir);
    match cli.command {
        Command::Serve(settings) => node::run(*settings, location()?).await?,
        Command::Validate { file } => {
            let config = config::load_file(&file)?;
            println!(
                "{}: valid ({} collections, {} operations, {} clients)",
                file.display(),
                config.collections.len(),
                config
                    .collections
                    .iter()
                    .map(|c| c.operations.len())
                    .sum::<usize>(),
                config.clients.len()
            );
        }
        Command::Apply {
            file,
            dry_run,
            prune,
        } => {
            let config = config::read_file(&file)?;
            let store = open(&location()?).await?;
            let applied = plan::apply(&store, &config, ApplyOptions { prune, dry_run }).await?;
            print!("{}", plan::render(&applied.changes));
            if applied.committed {
                println!("Applied: configuration version {}.", applied.version);
            } else if dry_run {
                println!(
                    "Dry run: nothing changed (configuration version {}).",
                    applied.version
                );
            } else {
                println!("No changes (configuration version {}).", applied.version);
            }
            store.close().await;
        }
        Command::Export { format, output } => {
            let store = open(&location()?).await?;
            let (_, records) = store.load().await?;
            let text = config::render(&assemble(&records)?, format);
            store.close().await;
            write_output(output.as_deref(), &text)?;
        }
        Command::Version => println!("portcullis {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(ExitCode::SUCCESS)
}

async fn open(location: &StoreLocation) -> anyhow::Result<Store> {
    Store::open(location)
        .await
        .with_context(|| format!("cannot open the configuration store {}", location.display()))
}

fn write_output(path: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match path {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display())),
        None => Ok(std::io::stdout().write_all(text.as_bytes())?),
    }
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,sqlx=warn,portcullis::access=off")
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
