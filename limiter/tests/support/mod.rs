//! Runs the real `portcullis-limiter` binary on an ephemeral port for tests, with a token file
//! holding one `manage` and one `check` token.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use portcullis_limiter::auth::{self, Role};
use portcullis_proto::limiter::v1 as pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

pub type Checker = pb::check_service_client::CheckServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
>;
pub type Manager = pb::quota_service_client::QuotaServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        Ok(req)
    }
}

/// Tokens shared by the nodes of one test.
pub struct Tokens {
    pub file: PathBuf,
    pub manage: String,
    pub check: String,
}

pub fn tokens(dir: &Path) -> Tokens {
    let (manage, m) = auth::issue("ops-team", Role::Manage);
    let (check, c) = auth::issue("gateway-1", Role::Check);
    let file = dir.join("tokens.yaml");
    auth::write_file(&file, vec![m, c]).unwrap();
    Tokens {
        file,
        manage,
        check,
    }
}

/// A running limiter node; killed when dropped.
pub struct Node {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub channel: Channel,
    /// The node's `/metrics` URL.
    pub metrics: String,
}

/// Starts a node with `args` (besides `--listen` and `--tokens`).
pub async fn start(tokens: &Tokens, args: &[&str]) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis-limiter"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--poll-interval", "100ms"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--tokens")
        .arg(&tokens.file)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the limiter binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut metrics = String::new();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("metrics on ") {
                metrics = url.to_owned();
            }
            if let Some(addr) = line.strip_prefix("listening on ") {
                return addr.parse().unwrap();
            }
        }
        panic!("the limiter exited before listening")
    })
    .await
    .expect("the limiter listens within 30 s");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Node {
        child,
        addr,
        channel,
        metrics,
    }
}

impl Node {
    pub fn checker(&self, token: &str) -> Checker {
        pb::check_service_client::CheckServiceClient::with_interceptor(
            self.channel.clone(),
            Bearer(Some(token.to_owned())),
        )
    }

    pub fn manager(&self, token: Option<&str>) -> Manager {
        pb::quota_service_client::QuotaServiceClient::with_interceptor(
            self.channel.clone(),
            Bearer(token.map(str::to_owned)),
        )
    }
}

/// The Redis URL for tests, or `None` (and a note) when it is not configured.
pub fn redis_url() -> Option<String> {
    match std::env::var("PORTCULLIS_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("PORTCULLIS_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "PORTCULLIS_TEST_REDIS_URL is required (PORTCULLIS_REQUIRE_SERVICES=1)"
            );
            eprintln!("skipping: PORTCULLIS_TEST_REDIS_URL is not set");
            None
        }
    }
}

/// A key prefix no other test uses.
pub fn prefix() -> String {
    let n: u64 = rand::random();
    format!("pctest-{n:016x}")
}

pub fn principal(client: &str, profile: &str) -> Option<pb::Principal> {
    Some(pb::Principal {
        client: client.into(),
        profile: profile.into(),
        environment: "sandbox".into(),
        partner: String::new(),
    })
}

pub fn product(collection: &str, operation: &str) -> Option<pb::Product> {
    Some(pb::Product {
        collection: collection.into(),
        operation: operation.into(),
    })
}

pub fn check_request(policy: &str, client: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        policies: vec![policy.into()],
        principal: principal(client, "sbx"),
        product: product("orders", "list"),
        source_ip: String::new(),
        hits: 1,
        trace_context: Default::default(),
    }
}

pub const SEED: &str = "policies:
  - name: partner-standard
    limits:
      - {name: daily, scope: profile, count: 3, window: day}
      - {name: burst, scope: client, count: 100, per: second}
";
