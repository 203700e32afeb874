//! `portcullis quota`: manage quota policies, overrides and usage through the limiter's gRPC
//! quota service — the in-process limiter of a local node (the default) or any limiter node of
//! a cluster. The same calls, the same service tokens, the same change records either way.

use std::path::{Path, PathBuf};

use anyhow::Context;
use portcullis_limiter::grpc::{policy_from_pb, policy_to_pb};
use portcullis_limiter::node::read_seed;
use portcullis_proto::limiter::v1 as pb;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::node::ADMIN_TOKEN_FILE;

/// Where the quota service is and how to authenticate.
#[derive(Debug, clap::Args)]
pub struct QuotaArgs {
    /// gRPC URL of the limiter (a limiter node, or a gateway's in-process limiter).
    #[arg(
        long,
        env = "PORTCULLIS_QUOTA_URL",
        default_value = "http://127.0.0.1:8082",
        global = true
    )]
    limiter: String,
    /// File holding a `manage` service token. Defaults to the local node's
    /// DATA_DIR/limiter/admin.token.
    #[arg(long, env = "PORTCULLIS_QUOTA_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: QuotaCommand,
}

#[derive(Debug, clap::Subcommand)]
enum QuotaCommand {
    /// List the policies (YAML).
    List,
    /// Show one policy (YAML).
    Get { name: String },
    /// Create or update every policy in a file (YAML: `policies: [...]`).
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Delete a policy (and its overrides).
    Delete { name: String },
    /// Per-principal overrides.
    #[command(subcommand)]
    Override(OverrideCommand),
    /// Show a subject's standing under a policy (charges nothing).
    Usage(UsageArgs),
    /// Forget a subject's counters under a policy (or one limit of it).
    Reset {
        #[command(flatten)]
        subject: UsageArgs,
        /// Only this limit of the policy.
        #[arg(long)]
        limit: Option<String>,
    },
    /// Show the change records, oldest first.
    Changes {
        /// Only records after this catalogue version.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, clap::Subcommand)]
enum OverrideCommand {
    /// Multiply a client's (or one profile's) principal-bound limits under a policy.
    Set {
        #[arg(long)]
        policy: String,
        #[arg(long)]
        client: String,
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        multiplier: f64,
        /// When it lapses: an RFC 3339 time, or `end-of-day`, `end-of-week` or `end-of-month`
        /// (UTC).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Remove an override.
    Clear {
        #[arg(long)]
        policy: String,
        #[arg(long)]
        client: String,
        #[arg(long)]
        profile: Option<String>,
    },
    /// List overrides (of one policy, or all).
    List {
        #[arg(long)]
        policy: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct UsageArgs {
    #[arg(long)]
    policy: String,
    #[arg(long)]
    client: Option<String>,
    #[arg(long)]
    profile: Option<String>,
    #[arg(long)]
    collection: Option<String>,
    #[arg(long)]
    operation: Option<String>,
    #[arg(long)]
    source_ip: Option<String>,
}

impl UsageArgs {
    fn request(&self, limit: Option<String>) -> pb::UsageRequest {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        pb::UsageRequest {
            policy: self.policy.clone(),
            principal: Some(pb::Principal {
                client: text(&self.client),
                profile: text(&self.profile),
                ..Default::default()
            }),
            product: Some(pb::Product {
                collection: text(&self.collection),
                operation: text(&self.operation),
            }),
            source_ip: text(&self.source_ip),
            limit: limit.unwrap_or_default(),
        }
    }
}

/// A quota service client that sends a service token with every call.
pub type Client = pb::quota_service_client::QuotaServiceClient<InterceptedService<Channel, Bearer>>;

/// A client of the quota service at `url` (`http://host:port`) with the `manage` token
/// `token`, connecting on first use (and again after a failure).
pub(crate) fn connect_lazy(url: &str, token: &str) -> anyhow::Result<Client> {
    anyhow::ensure!(
        url.starts_with("http://"),
        "{url}: give http://host:port (TLS to the limiter is not supported yet)"
    );
    let bearer = Bearer(
        format!("Bearer {}", token.trim())
            .parse()
            .context("the quota token is not a valid header value")?,
    );
    let channel = Channel::from_shared(url.to_owned())
        .with_context(|| format!("invalid limiter URL {url}"))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(10))
        .connect_lazy();
    Ok(pb::quota_service_client::QuotaServiceClient::with_interceptor(channel, bearer))
}

#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Runs one `portcullis quota` command, printing its result.
pub async fn run(args: QuotaArgs, data_dir: &Path) -> anyhow::Result<()> {
    let token_file = args
        .token_file
        .clone()
        .unwrap_or_else(|| data_dir.join("limiter").join(ADMIN_TOKEN_FILE));
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("cannot read the quota token {}", token_file.display()))?;
    let bearer = Bearer(
        format!("Bearer {}", token.trim())
            .parse()
            .context("the quota token is not a valid header value")?,
    );
    anyhow::ensure!(
        args.limiter.starts_with("http://"),
        "--limiter {}: give http://host:port (TLS to the limiter is not supported yet)",
        args.limiter
    );
    let channel = Channel::from_shared(args.limiter.clone())
        .with_context(|| format!("invalid limiter URL {}", args.limiter))?
        .connect()
        .await
        .with_context(|| format!("cannot reach the limiter at {}", args.limiter))?;
    let mut client =
        pb::quota_service_client::QuotaServiceClient::with_interceptor(channel, bearer);
    command(&mut client, args.command)
        .await
        .map_err(|status| anyhow::anyhow!("{}: {}", code_name(status.code()), status.message()))
}

async fn command(client: &mut Client, command: QuotaCommand) -> Result<(), tonic::Status> {
    match command {
        QuotaCommand::List => {
            let list = client
                .list_policies(pb::ListPoliciesRequest {})
                .await?
                .into_inner();
            let policies = list
                .policies
                .into_iter()
                .map(policy_from_pb)
                .collect::<Result<Vec<_>, _>>()?;
            #[derive(serde::Serialize)]
            struct Listing {
                policies: Vec<portcullis_limiter::policy::Policy>,
            }
            print!("{}", yaml(&Listing { policies }));
            println!("# catalogue version {}", list.version);
        }
        QuotaCommand::Get { name } => {
            let policy = policy_from_pb(
                client
                    .get_policy(pb::PolicyName { name })
                    .await?
                    .into_inner(),
            )?;
            print!("{}", yaml(&policy));
        }
        QuotaCommand::Apply { file } => {
            let policies = read_seed(&file).map_err(tonic::Status::invalid_argument)?;
            for policy in policies {
                let name = pb::PolicyName {
                    name: policy.name.clone(),
                };
                let stored = match client.get_policy(name).await {
                    Ok(found) => Some(policy_from_pb(found.into_inner())?),
                    Err(status) if status.code() == tonic::Code::NotFound => None,
                    Err(status) => return Err(status),
                };
                let request = pb::PolicyRequest {
                    policy: Some(policy_to_pb(&policy)),
                };
                let change = match stored {
                    Some(stored) if stored == policy => {
                        println!("unchanged policy/{}", policy.name);
                        continue;
                    }
                    Some(_) => client.update_policy(request).await?,
                    None => client.create_policy(request).await?,
                };
                print_change(change.into_inner().change);
            }
        }
        QuotaCommand::Delete { name } => {
            let change = client.delete_policy(pb::PolicyName { name }).await?;
            print_change(change.into_inner().change);
        }
        QuotaCommand::Override(OverrideCommand::Set {
            policy,
            client: principal,
            profile,
            multiplier,
            until,
            note,
        }) => {
            let expires_at = until
                .as_deref()
                .map(lapse)
                .transpose()
                .map_err(tonic::Status::invalid_argument)?
                .unwrap_or_default();
            let change = client
                .set_override(pb::Override {
                    policy,
                    client: principal,
                    profile: profile.unwrap_or_default(),
                    multiplier,
                    expires_at,
                    note,
                })
                .await?;
            print_change(change.into_inner().change);
        }
        QuotaCommand::Override(OverrideCommand::Clear {
            policy,
            client: principal,
            profile,
        }) => {
            let change = client
                .clear_override(pb::ClearOverrideRequest {
                    policy,
                    client: principal,
                    profile: profile.unwrap_or_default(),
                })
                .await?;
            print_change(change.into_inner().change);
        }
        QuotaCommand::Override(OverrideCommand::List { policy }) => {
            let list = client
                .list_overrides(pb::ListOverridesRequest {
                    policy: policy.unwrap_or_default(),
                })
                .await?
                .into_inner();
            if list.overrides.is_empty() {
                println!("(no overrides)");
            }
            for o in list.overrides {
                let profile = if o.profile.is_empty() {
                    "*"
                } else {
                    &o.profile
                };
                let until = if o.expires_at.is_empty() {
                    "never"
                } else {
                    &o.expires_at
                };
                println!(
                    "{}  client {}  profile {profile}  x{}  until {until}  {}",
                    o.policy, o.client, o.multiplier, o.note
                );
            }
        }
        QuotaCommand::Usage(args) => {
            let usage = client.get_usage(args.request(None)).await?.into_inner();
            if usage.limits.is_empty() {
                println!("(no limit of this policy applies to that subject)");
            }
            for l in usage.limits {
                let kind = if l.quota { "quota" } else { "rate" };
                println!(
                    "{}/{}  {kind}  {} of {} left  (resets in {}s)",
                    l.policy,
                    l.limit,
                    l.remaining,
                    l.limit_count,
                    l.reset_ms.div_ceil(1000)
                );
            }
        }
        QuotaCommand::Reset { subject, limit } => {
            let change = client.reset_usage(subject.request(limit)).await?;
            print_change(change.into_inner().change);
        }
        QuotaCommand::Changes { after, limit } => {
            let changes = client
                .list_changes(pb::ListChangesRequest {
                    after_version: after,
                    limit,
                })
                .await?
                .into_inner()
                .changes;
            for c in changes {
                println!(
                    "{}  v{}  {}  {}  {}",
                    c.at, c.version, c.actor, c.action, c.resource
                );
            }
        }
    }
    Ok(())
}

fn print_change(change: Option<pb::ChangeRecord>) {
    if let Some(c) = change {
        println!(
            "{} {} (catalogue version {}, by {})",
            c.action, c.resource, c.version, c.actor
        );
    }
}

/// `end-of-day`, `end-of-month` (UTC) or an RFC 3339 time, as RFC 3339.
fn lapse(text: &str) -> Result<String, String> {
    use portcullis_limiter::engine::window_end;
    use portcullis_limiter::policy::QuotaWindow;
    let now = OffsetDateTime::now_utc();
    let at = match text {
        "end-of-day" => window_end(now, QuotaWindow::Day),
        "end-of-week" => window_end(now, QuotaWindow::Week),
        "end-of-month" => window_end(now, QuotaWindow::Month),
        other => OffsetDateTime::parse(other, &Rfc3339).map_err(|_| {
            format!("--until '{other}': give an RFC 3339 time or end-of-day/-week/-month")
        })?,
    };
    at.format(&Rfc3339).map_err(|e| e.to_string())
}

fn yaml<T: serde::Serialize>(value: &T) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::NotFound => "not found",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::InvalidArgument => "invalid",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::Aborted => "conflict",
        tonic::Code::Ok
        | tonic::Code::Cancelled
        | tonic::Code::Unknown
        | tonic::Code::DeadlineExceeded
        | tonic::Code::ResourceExhausted
        | tonic::Code::FailedPrecondition
        | tonic::Code::OutOfRange
        | tonic::Code::Unimplemented
        | tonic::Code::Internal
        | tonic::Code::DataLoss => "error",
    }
}
