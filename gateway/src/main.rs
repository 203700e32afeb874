//! The `portcullis` command: glue between the command line and the library.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::time::Duration;

use portcullis::auth::token::TokenSecret;
use portcullis::config::{self, Format};
use portcullis::credentials;
use portcullis::model::{ClientId, CredentialId, ProfileId};
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
    /// Server secret keying API token hashes (at least 32 bytes); every node of a cluster needs
    /// the same one. Defaults to DATA_DIR/token-secret, created on first use.
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_TOKEN_SECRET",
        hide_env_values = true
    )]
    token_secret: Option<String>,
    /// `apply`, `export` and `credential` through this gateway's management API (its admin
    /// listener, e.g. http://127.0.0.1:8081) instead of the store, under the operator token in
    /// PORTCULLIS_OPERATOR_TOKEN; changes are recorded with channel `cli`.
    #[arg(long, global = true, env = "PORTCULLIS_SERVER")]
    server: Option<String>,
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
    /// Issue, rotate or revoke a profile's credentials.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Show what a profile may do right now: its state, credentials and operations.
    Access {
        #[arg(long)]
        client: String,
        #[arg(long)]
        profile: String,
    },
    /// Query request records and verify their hash chains.
    #[command(subcommand)]
    Audit(portcullis::audit_cli::AuditCommand),
    /// Manage the operators of the management API (service identities with roles).
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Create or update a collection's operations from an API description.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Run only the demo upstream (the one `serve --demo` starts in-process), for clusters
    /// whose nodes share it: deploy/compose and deploy/local-cluster.sh.
    DemoUpstream {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
    },
    /// Manage quota policies, overrides and usage (through the limiter's gRPC API).
    Quota(portcullis::quota_cli::QuotaArgs),
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Create an operator with a new service token; the token is printed once and never again.
    Token {
        /// The operator's id, e.g. `ci-deployer`.
        #[arg(long)]
        id: String,
        /// A role (repeatable): viewer, editor, admin, auditor.
        #[arg(long = "role", required = true)]
        roles: Vec<portcullis::manage::Role>,
        #[arg(long, default_value = "")]
        description: String,
        /// The token stops working after this long (e.g. 90d); no expiry without it.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List operators (never their tokens).
    List,
    /// Revoke an operator's token at once, on every node.
    Revoke {
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Import an OpenAPI 3.0 or 3.1 document (JSON or YAML) into a collection: its operations
    /// are replaced by the document's; the collection's own settings are kept.
    Openapi {
        /// The document.
        file: PathBuf,
        /// The collection to create or update.
        #[arg(long)]
        collection: String,
        /// Base path, for a new collection.
        #[arg(long)]
        base_path: Option<String>,
        /// Upstream per environment, for a new collection: `sandbox=https://…` (repeatable).
        #[arg(long = "upstream", value_parser = parse_upstream)]
        upstreams: Vec<(String, String)>,
        /// Offer every operation to agents as an MCP tool (`mcp.expose_all`).
        #[arg(long)]
        expose_mcp: bool,
        /// Print the plan as a diff and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_upstream(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(env, url)| (env.to_owned(), url.to_owned()))
        .filter(|(env, url)| !env.is_empty() && !url.is_empty())
        .ok_or_else(|| "use ENVIRONMENT=URL, e.g. sandbox=https://pets-sbx.internal".to_owned())
}

#[derive(Subcommand)]
enum CredentialCommand {
    /// Issue a new API token; it is printed once and never again.
    Issue {
        #[command(flatten)]
        target: TokenTarget,
    },
    /// Issue a replacement token; the old one keeps working for the overlap, then expires.
    Rotate {
        #[command(flatten)]
        target: TokenTarget,
        /// The credential being replaced.
        #[arg(long = "old")]
        old: String,
        /// How long the old token stays valid.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        overlap: Duration,
    },
    /// Revoke a credential; it stops working as soon as nodes load the new configuration.
    Revoke {
        #[arg(long)]
        client: String,
        #[arg(long)]
        profile: String,
        #[arg(long)]
        id: String,
    },
}

#[derive(clap::Args)]
struct TokenTarget {
    #[arg(long)]
    client: String,
    #[arg(long)]
    profile: String,
    /// Identifier of the new credential (default: `<profile>-<random>`).
    #[arg(long)]
    id: Option<String>,
    /// Lifetime of the new token, e.g. `90d` (default: no expiry).
    #[arg(long, value_parser = humantime::parse_duration)]
    expires_in: Option<Duration>,
}

impl TokenTarget {
    fn request(&self) -> credentials::TokenRequest {
        credentials::TokenRequest {
            client: ClientId(self.client.clone()),
            profile: ProfileId(self.profile.clone()),
            id: self.id.clone().map(CredentialId),
            expires_in: self.expires_in,
            dry_run: false,
        }
    }
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("can start the async runtime");
    // Only a serving node exports telemetry; every command logs.
    let export = match &cli.command {
        Command::Serve(settings) => Some(settings.telemetry.clone()),
        Command::Apply { .. }
        | Command::Export { .. }
        | Command::Validate { .. }
        | Command::Credential(_)
        | Command::Access { .. }
        | Command::Audit(_)
        | Command::Quota(_)
        | Command::Import(_)
        | Command::Operator(_)
        | Command::DemoUpstream { .. }
        | Command::Version => None,
    };
    let telemetry = runtime.block_on(async {
        portcullis_limiter::telemetry::init(
            "portcullis",
            matches!(cli.log_format, LogFormat::Json),
            "info,sqlx=warn,portcullis::access=off",
            export.as_ref(),
        )
    });
    let telemetry = match telemetry {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    runtime.block_on(async { telemetry.shutdown() });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let location = || StoreLocation::resolve(cli.store.as_deref(), &cli.data_dir);
    let secret = || TokenSecret::load(cli.token_secret.as_deref(), &cli.data_dir);
    // Only these commands go through the management API.
    let through_api = matches!(
        cli.command,
        Command::Apply { .. } | Command::Export { .. } | Command::Credential(_)
    );
    let remote = match cli.server.as_deref().filter(|_| through_api) {
        Some(server) => Some(portcullis::remote_cli::Remote::new(
            server,
            std::env::var("PORTCULLIS_OPERATOR_TOKEN").ok(),
        )?),
        None => None,
    };
    match cli.command {
        Command::Serve(settings) => {
            node::run(*settings, location()?, secret()?, &cli.data_dir).await?
        }
        Command::Validate { file } => {
            let config = config::load_file(&file)?;
            println!(
                "{}: valid ({} collections, {} operations, {} clients, {} identity providers)",
                file.display(),
                config.collections.len(),
                config
                    .collections
                    .iter()
                    .map(|c| c.operations.len())
                    .sum::<usize>(),
                config.clients.len(),
                config.identity_providers.len()
            );
        }
        Command::Apply {
            file,
            dry_run,
            prune,
        } if remote.is_some() => {
            anyhow::ensure!(!prune, "--prune works on the store, not through --server");
            let config = config::read_file(&file)?;
            remote
                .as_ref()
                .expect("matched")
                .apply(&config, dry_run)
                .await?;
        }
        Command::Export { format, output } if remote.is_some() => {
            let config = remote.as_ref().expect("matched").export().await?;
            write_output(output.as_deref(), &config::render(&config, format))?;
        }
        Command::Credential(command) if remote.is_some() => {
            let remote = remote.as_ref().expect("matched");
            let options = |t: &TokenTarget, overlap: Option<Duration>| {
                let mut options = serde_json::json!({});
                if let Some(id) = &t.id {
                    options["id"] = id.clone().into();
                }
                if let Some(d) = t.expires_in {
                    options["expires_in"] = format!("{}s", d.as_secs()).into();
                }
                if let Some(d) = overlap {
                    options["overlap"] = format!("{}s", d.as_secs()).into();
                }
                options
            };
            match command {
                CredentialCommand::Issue { target } => {
                    remote
                        .issue(
                            &target.client,
                            &target.profile,
                            options(&target, None),
                            None,
                        )
                        .await?;
                }
                CredentialCommand::Rotate {
                    target,
                    old,
                    overlap,
                } => {
                    remote
                        .issue(
                            &target.client,
                            &target.profile,
                            options(&target, Some(overlap)),
                            Some(&old),
                        )
                        .await?;
                }
                CredentialCommand::Revoke {
                    client,
                    profile,
                    id,
                } => remote.revoke(&client, &profile, &id).await?,
            }
        }
        Command::Apply {
            file,
            dry_run,
            prune,
        } => {
            let config = config::read_file(&file)?;
            let store = open(&location()?).await?;
            let applied = plan::apply(&store, &config, ApplyOptions { prune, dry_run }).await?;
            print_plan(&applied, dry_run, "Applied");
            store.close().await;
        }
        Command::Export { format, output } => {
            let store = open(&location()?).await?;
            let (_, records) = store.load().await?;
            let text = config::render(&assemble(&records)?, format);
            store.close().await;
            write_output(output.as_deref(), &text)?;
        }
        Command::Credential(command) => {
            let store = open(&location()?).await?;
            match command {
                CredentialCommand::Issue { target } => {
                    let issued = credentials::issue(&store, &secret()?, &target.request()).await?;
                    print_issued(&issued);
                }
                CredentialCommand::Rotate {
                    target,
                    old,
                    overlap,
                } => {
                    let issued = credentials::rotate(
                        &store,
                        &secret()?,
                        &target.request(),
                        &CredentialId(old.clone()),
                        overlap,
                    )
                    .await?;
                    print_issued(&issued);
                    println!(
                        "The old credential {old} stays valid for {}.",
                        humantime::format_duration(overlap)
                    );
                }
                CredentialCommand::Revoke {
                    client,
                    profile,
                    id,
                } => {
                    let (version, _) = credentials::revoke(
                        &store,
                        &ClientId(client),
                        &ProfileId(profile),
                        &CredentialId(id.clone()),
                        false,
                    )
                    .await?;
                    println!("Revoked {id} (configuration version {version}).");
                }
            }
            store.close().await;
        }
        Command::Access { client, profile } => {
            let store = open(&location()?).await?;
            let text = credentials::describe_access(&store, &ClientId(client), &ProfileId(profile))
                .await?;
            print!("{text}");
            store.close().await;
        }
        Command::Audit(command) => {
            let store = open(&location()?).await?;
            let ok = portcullis::audit_cli::run(&store, command).await?;
            store.close().await;
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::DemoUpstream { listen } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!("demo upstream: http://{}", listener.local_addr()?);
            tokio::select! {
                _ = portcullis::demo::serve_upstream(listener) => {}
                _ = portcullis::node::shutdown_signal() => {}
            }
        }
        Command::Quota(args) => portcullis::quota_cli::run(args, &cli.data_dir).await?,
        Command::Operator(command) => {
            let store = open(&location()?).await?;
            let result = operator(&store, &secret()?, command).await;
            store.close().await;
            result?;
        }
        Command::Import(ImportCommand::Openapi {
            file,
            collection,
            base_path,
            upstreams,
            expose_mcp,
            dry_run,
        }) => {
            let document = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let store = open(&location()?).await?;
            let new = portcullis::openapi::NewCollection {
                base_path,
                upstreams: upstreams
                    .into_iter()
                    .map(|(env, url)| (portcullis::model::Environment(env), url))
                    .collect(),
            };
            let id = portcullis::model::CollectionId(collection);
            let report = portcullis::openapi::import_into_store(
                &store, &id, &document, &new, expose_mcp, dry_run,
            )
            .await;
            store.close().await;
            let report = report?;
            for note in &report.notes {
                eprintln!("note: {note}");
            }
            print_plan(&report.applied, dry_run, &format!("Imported into '{id}'"));
        }
        Command::Version => println!("portcullis {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(ExitCode::SUCCESS)
}

async fn operator(
    store: &Store,
    secret: &TokenSecret,
    command: OperatorCommand,
) -> anyhow::Result<()> {
    match command {
        OperatorCommand::Token {
            id,
            roles,
            description,
            expires_in,
        } => {
            let expires = expires_in.map(|d| time::OffsetDateTime::now_utc() + d);
            let (row, token) =
                portcullis::manage::issue(secret, &id, &roles, &description, expires);
            if store.operators().await?.iter().any(|o| o.id == id) {
                anyhow::bail!("operator '{id}' exists; revoke it or choose another id");
            }
            store.insert_operator(&row).await?;
            println!(
                "Operator {id} ({}); its token (shown once):",
                row.roles.join(", ")
            );
            println!("{token}");
        }
        OperatorCommand::List => {
            for op in store.operators().await? {
                println!("{}", serde_json::to_string(&op)?);
            }
        }
        OperatorCommand::Revoke { id } => {
            let now = portcullis::audit::timestamp(time::OffsetDateTime::now_utc());
            if !store.revoke_operator(&id, &now).await? {
                anyhow::bail!("no operator '{id}'");
            }
            println!("Revoked operator {id}.");
        }
    }
    Ok(())
}

/// The plan as a diff, then what became of it: `done` (committed), a dry run, or no change.
fn print_plan(applied: &plan::Applied, dry_run: bool, done: &str) {
    print!("{}", plan::render(&applied.changes));
    let version = applied.version;
    if applied.committed {
        println!("{done}: configuration version {version}.");
    } else if dry_run {
        println!("Dry run: nothing changed (configuration version {version}).");
    } else {
        println!("No changes (configuration version {version}).");
    }
}

fn print_issued(issued: &credentials::Issued) {
    println!("Issued credential {}.", issued.credential);
    if let Some(t) = issued.expires_at {
        println!("Expires: {}", credentials::rfc3339(t));
    }
    println!("Token (shown once; store it now):");
    println!("{}", issued.token);
    println!("(configuration version {})", issued.version);
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
