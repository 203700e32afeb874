//! `portcullis-limiter`: a limiter node, and its token tool.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use portcullis_limiter::RedisSettings;
use portcullis_limiter::auth::{self, Role, ServiceTokens};
use portcullis_limiter::manage::Quotas;
use portcullis_limiter::node::{self, Backend};

#[derive(Parser)]
#[command(
    name = "portcullis-limiter",
    version,
    about = "Portcullis limiter: rates and quotas over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a limiter node.
    Serve(Box<ServeArgs>),
    /// Make a service token: prints the secret once, and the entry for the token file.
    Token {
        #[arg(long)]
        name: String,
        /// `check` (gateways) or `manage` (operators; may also check).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Append the entry to this token file (created if missing).
        #[arg(long)]
        append: Option<PathBuf>,
    },
    /// Check a seed file without starting.
    Validate {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address for the gRPC API.
    #[arg(long, default_value_t = node::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Redis URL for counters and definitions; without it, counters are in memory and
    /// definitions in --data-dir (one node only).
    #[arg(long, env = "PORTCULLIS_REDIS_URL", hide_env_values = true)]
    redis: Option<String>,
    /// Prefix of every Redis key.
    #[arg(long, default_value = "portcullis")]
    redis_prefix: String,
    /// Redis connections in the pool (each multiplexes many checks).
    #[arg(long, default_value_t = 4)]
    redis_pool: u32,
    /// How long one Redis operation may take.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    redis_timeout: Duration,
    /// Where definitions are kept without Redis.
    #[arg(long, default_value = "portcullis-limiter-data")]
    data_dir: PathBuf,
    /// At most this many counters in memory (without Redis).
    #[arg(long, default_value_t = 1_000_000)]
    max_keys: usize,
    /// Service tokens (YAML: `tokens: [{name, role, sha256}]`); see `portcullis-limiter token`.
    #[arg(long, env = "PORTCULLIS_LIMITER_TOKENS")]
    tokens: PathBuf,
    /// Policies to create at start when they do not exist yet.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// How often to pick up other nodes' changes and check the store.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Address for Prometheus metrics (`/metrics`, plain HTTP).
    #[arg(long, default_value = "127.0.0.1:9091")]
    metrics_listen: SocketAddr,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(flatten)]
    telemetry: portcullis_limiter::telemetry::TelemetrySettings,
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "check" => Ok(Role::Check),
        "manage" => Ok(Role::Manage),
        other => Err(format!("unknown role '{other}' (check or manage)")),
    }
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Token { name, role, append } => {
            let (secret, entry) = auth::issue(&name, role);
            if let Some(path) = append {
                let mut entries = match path.exists() {
                    true => match auth::read_entries(&path) {
                        Ok(entries) => entries,
                        Err(e) => return fail(&e),
                    },
                    false => Vec::new(),
                };
                entries.push(entry);
                if let Err(e) = auth::write_file(&path, entries) {
                    return fail(&format!("cannot write {}: {e}", path.display()));
                }
                eprintln!("added token '{name}' to {}", path.display());
            } else {
                eprintln!(
                    "add to the token file:\n  - name: {}\n    role: {}\n    sha256: {}",
                    entry.name,
                    role_name(entry.role),
                    entry.sha256
                );
            }
            println!("{secret}");
            ExitCode::SUCCESS
        }
        Command::Validate { file } => match node::read_seed(&file) {
            Ok(policies) => {
                println!("{}: {} policies, valid", file.display(), policies.len());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Serve(args) => {
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
            let telemetry = runtime.block_on(async {
                portcullis_limiter::telemetry::init(
                    "portcullis-limiter",
                    args.log_format == "json",
                    "info",
                    Some(&args.telemetry),
                )
            });
            let telemetry = match telemetry {
                Ok(t) => t,
                Err(e) => return fail(&e.to_string()),
            };
            let result = runtime.block_on(serve(*args));
            runtime.block_on(async { telemetry.shutdown() });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let tokens = Arc::new(ServiceTokens::load(&args.tokens)?);
    let seed = args.seed.as_deref().map(node::read_seed).transpose()?;
    let backend = match &args.redis {
        Some(url) => Backend::Redis(RedisSettings {
            url: url.clone(),
            prefix: args.redis_prefix.clone(),
            pool_size: args.redis_pool,
            timeout: args.redis_timeout,
        }),
        None => Backend::Local {
            data_dir: args.data_dir.clone(),
            max_keys: args.max_keys,
        },
    };
    let (counters, definitions) = backend
        .open()
        .map_err(|e| format!("cannot open the limiter's store: {e}"))?;
    let quotas = Arc::new(
        Quotas::open(definitions, counters)
            .await
            .map_err(|e| format!("cannot load the quota definitions: {e}"))?,
    );
    if let Some(policies) = seed {
        let created = quotas.seed(policies).await.map_err(|e| e.to_string())?;
        if !created.is_empty() {
            tracing::info!(policies = ?created, "seeded policies");
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, redis = args.redis.is_some(), "limiter listening");
    let metrics = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.metrics_listen))?;
    let metrics_addr = metrics.local_addr().map_err(|e| e.to_string())?;
    let metrics = tokio::spawn(portcullis_limiter::metrics::serve(metrics));
    // Tests and scripts read the bound addresses from here.
    println!("metrics on http://{metrics_addr}/metrics");
    println!("listening on {addr}");
    let served = node::serve(
        listener,
        quotas,
        tokens,
        args.poll_interval,
        shutdown_signal(),
    )
    .await
    .map_err(|e| e.to_string());
    metrics.abort();
    served
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Check => "check",
        Role::Manage => "manage",
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
