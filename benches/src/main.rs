//! The load-test harness: what the gateway costs against a plain reverse proxy, on this
//! machine, in one run.
//!
//! ```text
//! cargo build --release --bins -p portcullis-benches -p portcullis -p portcullis-limiter
//! target/release/portcullis-benches --quick            # a few seconds per row
//! target/release/portcullis-benches --full --output benches/RESULTS.md
//! target/release/portcullis-benches --smoke            # CI: it still works
//! ```
//!
//! It starts a small upstream (in this process), then drives in turn, with the same load
//! generator and connection count: the upstream directly; nginx as a plain `proxy_pass` with
//! keep-alive (the reference); and `portcullis` in several configurations. Each runs closed
//! loop (peak throughput) and open loop at 50% and 80% of nginx's peak (latency without
//! coordinated omission); the upstream alone runs open loop at the same rates, so each proxy's
//! added p99 is its own less the upstream's. The answers are 17 bytes of JSON, and 1 KiB for
//! one closed-loop row each of direct, nginx and the full policy. The table gives requests/s,
//! latency percentiles, the proxy's CPU (per second and per request) and peak memory, and
//! ratios to nginx and to direct. `--full` adds the scale runs: routing with
//! 10 to 100,000 operations, lookup with 10 and 1,000,000 issued tokens, and memory for
//! 1,000,000 limiter keys.
//!
//! Needs nginx (Debian: `apt-get install nginx`) and, for the remote-limiter row, Redis at
//! `PORTCULLIS_TEST_REDIS_URL`; rows whose needs are missing are skipped and say so.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_benches::load::{self, Call, Mode, Plan, Report};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Portcullis against a plain reverse proxy, on this machine")]
struct Args {
    /// A few seconds per row.
    #[arg(long, group = "size")]
    quick: bool,
    /// Longer rows, and the scale runs.
    #[arg(long, group = "size")]
    full: bool,
    /// Under a second per row, no scale runs: checks that the harness works (CI).
    #[arg(long, group = "size")]
    smoke: bool,
    /// Connections of the closed-loop runs.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Write the results (Markdown) here, e.g. benches/RESULTS.md.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Internal: measure the memory of this many limiter keys in a fresh process, print JSON.
    #[arg(long, hide = true)]
    limiter_keys: Option<usize>,
}

/// The row the targets are about.
const FULL_POLICY: &str = "portcullis: full policy (API token, authz, in-process limiter, audit)";
/// The 1 KiB answer's rows (the others answer 17 bytes).
const KIB_DIRECT: &str = "direct, 1 KiB answer";
const KIB_NGINX: &str = "nginx proxy_pass, 1 KiB answer";
const KIB_FULL: &str = "portcullis: full policy, 1 KiB answer";

/// How long each run lasts.
struct Sizes {
    closed: Duration,
    open: Duration,
    warmup: Duration,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if let Some(n) = args.limiter_keys {
        // A fresh process: its resident memory grows by what the keys take, not into memory
        // an earlier run freed.
        let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        let measured: Vec<(String, String)> = runtime
            .block_on(limiter_keys(n))
            .into_iter()
            .map(|s| (s.what, s.result))
            .collect();
        println!(
            "{}",
            serde_json::to_string(&measured).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let sizes = if args.smoke {
        Sizes {
            closed: Duration::from_millis(700),
            open: Duration::from_millis(500),
            warmup: Duration::from_millis(100),
        }
    } else if args.full {
        Sizes {
            closed: Duration::from_secs(15),
            open: Duration::from_secs(15),
            warmup: Duration::from_secs(2),
        }
    } else {
        Sizes {
            closed: Duration::from_secs(4),
            open: Duration::from_secs(4),
            warmup: Duration::from_millis(500),
        }
    };
    let bins = binaries()?;
    // Two worker threads for the generator and the upstream; the proxy runs in its own process.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let upstream = runtime.block_on(start_upstream());
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    // The upstream alone, then nginx: the references.
    let direct = measure(
        &runtime,
        &sizes,
        args.connections,
        &format!("http://{upstream}"),
        &[],
        &rest("/small"),
        None,
        &[],
    );
    rows.push(Row::new(
        "direct (upstream alone)",
        "closed",
        direct.clone(),
        None,
    ));
    let nginx = match Nginx::start(work.path(), upstream) {
        Ok(nginx) => Some(nginx),
        Err(e) => {
            notes.push(format!("nginx skipped: {e}"));
            None
        }
    };
    let reference_peak = match &nginx {
        Some(n) => {
            let report = measure(
                &runtime,
                &sizes,
                args.connections,
                &n.url,
                &[],
                &rest("/small"),
                Some(n.pid()),
                &[],
            );
            let peak = report.report.requests_per_second;
            rows.push(Row::new(
                "nginx proxy_pass (reference)",
                "closed",
                report,
                None,
            ));
            rows.extend(reference_shares(
                &runtime,
                &sizes,
                args.connections,
                "nginx proxy_pass (reference)",
                &n.url,
                &[],
                &rest("/small"),
                Some(n.pid()),
                &[],
                peak,
            ));
            peak
        }
        None => direct.report.requests_per_second,
    };
    // The upstream alone at the same rates: what the generator and the upstream add, so that
    // each proxy's added latency is its p99 less this one's.
    rows.extend(reference_shares(
        &runtime,
        &sizes,
        args.connections,
        "direct (upstream alone)",
        &format!("http://{upstream}"),
        &[],
        &rest("/small"),
        None,
        &[],
        reference_peak,
    ));
    // A larger answer (about 1 KiB of JSON), closed loop.
    let kib = measure(
        &runtime,
        &sizes,
        args.connections,
        &format!("http://{upstream}"),
        &[],
        &rest("/kib"),
        None,
        &[],
    );
    rows.push(Row::new(KIB_DIRECT, "closed", kib, None));
    if let Some(n) = &nginx {
        let report = measure(
            &runtime,
            &sizes,
            args.connections,
            &n.url,
            &[],
            &rest("/kib"),
            Some(n.pid()),
            &[],
        );
        rows.push(Row::new(KIB_NGINX, "closed", report, None));
    }
    drop(nginx);

    let redis = std::env::var("PORTCULLIS_TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty());
    for setup in Setup::all() {
        if setup.remote_limiter && redis.is_none() {
            notes.push(format!(
                "'{}' skipped: PORTCULLIS_TEST_REDIS_URL is not set",
                setup.name
            ));
            continue;
        }
        let dir = work.path().join(setup.slug());
        let node = match Gateway::start(&bins, &dir, upstream, &setup, redis.as_deref(), 10) {
            Ok(node) => node,
            Err(e) => return Err(format!("{}: {e}", setup.name)),
        };
        let call = if setup.mcp {
            Call::Tool {
                name: "get-small".into(),
                arguments: json!({}),
            }
        } else {
            rest("/bench/small")
        };
        let tokens = [node.credential.clone()];
        let closed = measure(
            &runtime,
            &sizes,
            args.connections,
            &node.url,
            &tokens,
            &call,
            Some(node.pid()),
            &node.helpers(),
        );
        let own_peak = closed.report.requests_per_second;
        rows.push(Row::new(setup.name, "closed", closed, Some(node.note())));
        // Latency at half of what this setup itself sustains.
        let open = measure_open(
            &runtime,
            &sizes,
            args.connections,
            &node.url,
            &tokens,
            &call,
            Some(node.pid()),
            &node.helpers(),
            own_peak * 0.5,
        );
        rows.push(Row::new(setup.name, "open 50% of own peak", open, None));
        rows.extend(reference_shares(
            &runtime,
            &sizes,
            args.connections,
            setup.name,
            &node.url,
            &tokens,
            &call,
            Some(node.pid()),
            &node.helpers(),
            reference_peak,
        ));
        if setup.name == FULL_POLICY {
            let kib = measure(
                &runtime,
                &sizes,
                args.connections,
                &node.url,
                &tokens,
                &rest("/bench/kib"),
                Some(node.pid()),
                &node.helpers(),
            );
            rows.push(Row::new(KIB_FULL, "closed", kib, None));
        }
    }

    let mut scale = Vec::new();
    if args.full {
        scale = scale_runs(
            &runtime,
            &bins,
            work.path(),
            upstream,
            &sizes,
            args.connections,
        )?;
    }
    let text = render(&rows, &scale, &notes, &args);
    if !scale.is_empty() || !notes.is_empty() {
        print!("{text}");
    }
    if let Some(path) = &args.output {
        std::fs::write(path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    // Every row answered, and with success: a smoke run fails otherwise.
    for row in &rows {
        let ok = row.measured.report.statuses.get(&200).copied().unwrap_or(0);
        if ok == 0 || ok != row.measured.report.requests || row.measured.report.failed > 0 {
            return Err(format!(
                "'{}' ({}) answered {:?}, {} without an answer",
                row.setup, row.mode, row.measured.report.statuses, row.measured.report.failed
            ));
        }
    }
    Ok(())
}

fn rest(path: &str) -> Call {
    Call::Rest {
        method: http::Method::GET,
        path: path.into(),
        body: None,
    }
}

/// A run's report and what the proxy process used meanwhile.
#[derive(Clone)]
struct Measured {
    report: Report,
    /// CPU seconds per second of the proxy process (1.0 = one core busy).
    cpu: Option<f64>,
    /// Peak resident memory of the proxy process, in MiB.
    peak_mib: Option<f64>,
}

struct Row {
    setup: String,
    mode: String,
    measured: Measured,
    note: Option<String>,
}

impl Row {
    fn new(setup: &str, mode: &str, measured: Measured, note: Option<String>) -> Self {
        Self {
            setup: setup.into(),
            mode: mode.into(),
            measured,
            note,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn measure(
    runtime: &tokio::runtime::Runtime,
    sizes: &Sizes,
    connections: usize,
    base: &str,
    tokens: &[String],
    call: &Call,
    pid: Option<u32>,
    helpers: &[u32],
) -> Measured {
    run_measured(
        runtime,
        sizes.warmup,
        sizes.closed,
        base,
        tokens,
        call,
        Mode::Closed { connections },
        pid,
        helpers,
    )
}

#[allow(clippy::too_many_arguments)]
fn measure_open(
    runtime: &tokio::runtime::Runtime,
    sizes: &Sizes,
    connections: usize,
    base: &str,
    tokens: &[String],
    call: &Call,
    pid: Option<u32>,
    helpers: &[u32],
    rate: f64,
) -> Measured {
    let mode = Mode::Open {
        rate: rate.max(10.0),
        connections: connections * 8,
    };
    run_measured(
        runtime,
        sizes.warmup,
        sizes.open,
        base,
        tokens,
        call,
        mode,
        pid,
        helpers,
    )
}

/// The open-loop rows at 50% and 80% of the reference's peak, for every setup alike.
#[allow(clippy::too_many_arguments)]
fn reference_shares(
    runtime: &tokio::runtime::Runtime,
    sizes: &Sizes,
    connections: usize,
    setup: &str,
    base: &str,
    tokens: &[String],
    call: &Call,
    pid: Option<u32>,
    helpers: &[u32],
    reference_peak: f64,
) -> Vec<Row> {
    [0.5, 0.8]
        .into_iter()
        .map(|share| {
            let open = measure_open(
                runtime,
                sizes,
                connections,
                base,
                tokens,
                call,
                pid,
                helpers,
                reference_peak * share,
            );
            Row::new(setup, &format!("open {:.0}%", share * 100.0), open, None)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn run_measured(
    runtime: &tokio::runtime::Runtime,
    warmup: Duration,
    duration: Duration,
    base: &str,
    tokens: &[String],
    call: &Call,
    mode: Mode,
    pid: Option<u32>,
    helpers: &[u32],
) -> Measured {
    let plan = |duration| Plan {
        base: base.to_owned(),
        tokens: tokens.to_vec(),
        calls: vec![(call.clone(), 1)],
        mode,
        duration,
    };
    runtime.block_on(load::run(&plan(warmup), None));
    // The proxy with its child processes (nginx's workers), and its helpers.
    let processes: Vec<u32> = pid
        .into_iter()
        .flat_map(tree)
        .chain(helpers.iter().copied())
        .collect();
    let before: f64 = processes.iter().filter_map(|p| cpu_seconds(*p)).sum();
    let started = std::time::Instant::now();
    let report = runtime.block_on(load::run(&plan(duration), None));
    let wall = started.elapsed().as_secs_f64();
    let after: f64 = processes.iter().filter_map(|p| cpu_seconds(*p)).sum();
    Measured {
        report,
        cpu: pid.map(|_| (after - before) / wall),
        peak_mib: pid.map(|p| tree(p).into_iter().filter_map(peak_mib).sum()),
    }
}

/// A process and its children, from /proc.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let parent = std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')').and_then(|(_, rest)| {
                        rest.split_whitespace()
                            .nth(1)
                            .and_then(|p| p.parse::<u32>().ok())
                    })
                });
            if parent == Some(pid) {
                all.push(child);
            }
        }
    }
    all
}

/// CPU seconds a process has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces) end with ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The peak resident memory of a process (VmHWM), in MiB.
fn peak_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The binaries beside this one. (Built by the same command that built this one; building
/// them from here would run cargo with `cargo run`'s environment, whose differences make each
/// build undo the other's.)
fn binaries() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no directory")?.to_path_buf();
    for name in ["portcullis", "portcullis-limiter"] {
        if !dir.join(name).exists() {
            return Err(format!(
                "{} is missing: build with `cargo build --release --bins -p portcullis-benches -p portcullis -p portcullis-limiter` first",
                dir.join(name).display()
            ));
        }
    }
    if !dir.ends_with("release") {
        eprintln!("note: a debug build measures little; build and run with --release");
    }
    Ok(dir)
}

/// The upstream: `/small` answers 15 bytes of JSON, `/kib` about 1 KiB; it also publishes the
/// bench issuer's OpenID discovery and keys, for the JWT row.
async fn start_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let kib: Bytes = Bytes::from(
        json!({"items": (0..24).map(|i| json!({"id": i, "name": format!("item-{i:04}")})).collect::<Vec<_>>()}).to_string(),
    );
    let discovery = Bytes::from(
        json!({"issuer": format!("http://{addr}"), "jwks_uri": format!("http://{addr}/jwks")})
            .to_string(),
    );
    let jwks = Bytes::from(json!({"keys": [jwt::key().1]}).to_string());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (kib, discovery, jwks) = (kib.clone(), discovery.clone(), jwks.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = match req.uri().path() {
                        p if p.ends_with("/kib") => kib.clone(),
                        "/.well-known/openid-configuration" => discovery.clone(),
                        "/jwks" => jwks.clone(),
                        _ => Bytes::from_static(br#"{"ok":true,"n":1}"#),
                    };
                    async move {
                        let mut response = hyper::Response::new(Full::new(body));
                        response.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The bench issuer's signing key (ES256), made once per run.
mod jwt {
    use std::sync::OnceLock;

    use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};

    pub(crate) fn key() -> &'static (EncodingKey, serde_json::Value) {
        static KEY: OnceLock<(EncodingKey, serde_json::Value)> = OnceLock::new();
        KEY.get_or_init(|| {
            let pair = rcgen::KeyPair::generate().expect("a P-256 key");
            let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("PEM");
            let mut jwk =
                serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).expect("JWK"))
                    .expect("JSON");
            jwk["kid"] = "bench".into();
            (key, jwk)
        })
    }

    /// An access token for the bench client, valid for an hour.
    pub(crate) fn token(issuer: &str) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("bench".into());
        let claims = serde_json::json!({"iss": issuer, "aud": "bench", "sub": "load", "azp": "load", "iat": now, "exp": now + 3600});
        jsonwebtoken::encode(&header, &claims, &key().0).expect("signs")
    }
}

/// nginx from the system, as a plain reverse proxy with keep-alive to the upstream.
struct Nginx {
    child: Child,
    url: String,
}

impl Nginx {
    fn start(dir: &Path, upstream: SocketAddr) -> Result<Self, String> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("nginx is not installed (Debian: apt-get install nginx)")?;
        let port = free_port();
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).map_err(|e| e.to_string())?;
        let conf = format!(
            "worker_processes auto;\ndaemon off;\nerror_log {p}/logs/error.log warn;\npid {p}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
             \x20 upstream backend {{ server {upstream}; keepalive 128; }}\n\
             \x20 server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
            p = prefix.display()
        );
        let file = prefix.join("nginx.conf");
        std::fs::write(&file, conf).map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start nginx: {e}"))?;
        wait_for_port(port)?;
        Ok(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// The master process; its workers are counted through it.
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_port(port: u16) -> Result<(), String> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("nothing listens on {port}"))
}

/// A Portcullis configuration under test.
struct Setup {
    name: &'static str,
    /// A quota policy (high limits) on the operation, checked by the limiter.
    limits: bool,
    /// Request records (the default); off for the bare row.
    records: bool,
    /// An OIDC access token (ES256) instead of an API token.
    jwt: bool,
    remote_limiter: bool,
    /// The same operation as an MCP `tools/call`.
    mcp: bool,
    /// API tokens issued to other profiles besides the caller's (lookup cost and memory).
    other_tokens: usize,
}

impl Setup {
    fn all() -> Vec<Setup> {
        let full = setup_of;
        vec![
            Setup {
                limits: false,
                records: false,
                ..full("portcullis: API token, no limits, no records")
            },
            full(FULL_POLICY),
            Setup {
                jwt: true,
                ..full("portcullis: full policy with a JWT (ES256) instead")
            },
            Setup {
                remote_limiter: true,
                ..full("portcullis: full policy, remote limiter (gRPC + Redis)")
            },
            Setup {
                mcp: true,
                ..full("portcullis: full policy, as an MCP tools/call")
            },
        ]
    }

    fn slug(&self) -> String {
        self.name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    }
}

/// A `portcullis serve` process (and its limiter node, for the remote row).
struct Gateway {
    child: Child,
    limiter: Option<Child>,
    url: String,
    /// The admin listener (management API).
    admin: String,
    credential: String,
}

impl Gateway {
    fn start(
        bins: &Path,
        dir: &Path,
        upstream: SocketAddr,
        setup: &Setup,
        redis: Option<&str>,
        operations_count: usize,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        // JSON: the YAML reader limits a document's size (against hostile files), and the
        // scale runs write 100,000 operations or tokens.
        let mut operations = vec![
            json!({"id": "get-small", "methods": ["GET"], "path": "/small", "mcp": {}}),
            json!({"id": "get-kib", "methods": ["GET"], "path": "/kib"}),
        ];
        operations.extend((0..operations_count.saturating_sub(2)).map(|i| {
            json!({"id": format!("op-{i}"), "methods": ["GET"], "path": format!("/things/{i}/{{id}}")})
        }));
        let mut collection = json!({
            "id": "bench", "base_path": "/bench",
            "upstreams": {"sandbox": format!("http://{upstream}")},
            "operations": operations,
        });
        if setup.limits {
            collection["quota_policy"] = "bench".into();
        }
        let mut profile =
            json!({"id": "load-sbx", "environment": "sandbox", "collections": ["bench"]});
        let mut config = json!({
            "collections": [collection],
            "clients": [{"id": "load", "partner": "load", "profiles": [profile.clone()]}],
        });
        if setup.jwt {
            config["identity_providers"] = json!([{"id": "bench-idp", "issuer": format!("http://{upstream}"), "audiences": ["bench"]}]);
            profile["credentials"] = json!([{"id": "load-oidc", "kind": "oidc", "provider": "bench-idp", "claims": {"azp": "load"}}]);
            config["clients"][0]["profiles"][0] = profile;
        }
        // Other clients' API tokens: stored hashes the lookup must tell apart (made up: no
        // token hashes to them).
        if setup.other_tokens > 0 {
            let credentials: Vec<serde_json::Value> = (0..setup.other_tokens)
                .map(|i| {
                    json!({"id": format!("t{i}"), "kind": "api_token",
                           "token_hash": format!("{:064x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15)})
                })
                .collect();
            config["clients"].as_array_mut().expect("an array").push(json!({
                "id": "others",
                "profiles": [{"id": "others-sbx", "environment": "sandbox", "collections": ["bench"], "credentials": credentials}],
            }));
        }
        std::fs::write(dir.join("config.json"), config.to_string()).map_err(|e| e.to_string())?;
        std::fs::write(
            dir.join("seed.yaml"),
            "policies:\n  - name: bench\n    limits:\n      - {name: burst, scope: client, count: 1000000000, per: second}\n      - {name: monthly, scope: profile, count: 1000000000, window: month}\n",
        )
        .map_err(|e| e.to_string())?;
        let cli = |args: &[&str]| cli(bins, dir, args);
        cli(&[
            "apply",
            "-f",
            dir.join("config.json").to_str().expect("UTF-8"),
        ])?;
        let credential = if setup.jwt {
            jwt::token(&format!("http://{upstream}"))
        } else {
            cli(&[
                "credential",
                "issue",
                "--client",
                "load",
                "--profile",
                "load-sbx",
            ])?
            .lines()
            .find(|l| l.starts_with("pcl_"))
            .ok_or("no token printed")?
            .to_owned()
        };
        let mut limiter = None;
        let mut args: Vec<String> = vec!["--quota-listen".into(), "127.0.0.1:0".into()];
        if setup.remote_limiter {
            let redis = redis.ok_or("no Redis")?;
            let tokens = dir.join("limiter-tokens.yaml");
            let out = Command::new(bins.join("portcullis-limiter"))
                .args(["token", "--name", "bench", "--role", "check", "--append"])
                .arg(&tokens)
                .output()
                .map_err(|e| e.to_string())?;
            std::fs::write(dir.join("check.token"), &out.stdout).map_err(|e| e.to_string())?;
            let mut cmd = Command::new(bins.join("portcullis-limiter"));
            cmd.args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--redis",
                redis,
            ])
            .args(["--redis-prefix", &format!("pcbench-{}", std::process::id())])
            .arg("--tokens")
            .arg(&tokens)
            .arg("--seed")
            .arg(dir.join("seed.yaml"));
            let (child, found) = spawn(cmd, &["listening on "])?;
            limiter = Some(child);
            args = vec![
                "--limiter".into(),
                format!("http://{}", found[0]),
                "--limiter-token-file".into(),
                dir.join("check.token").display().to_string(),
                // Throughput, not the failure mode: on a shared two-core machine a stall can
                // outlast the default 100 ms, and the policy then refuses (fail closed).
                "--limiter-timeout".into(),
                "1s".into(),
            ];
        } else {
            args.extend([
                "--quota-seed".into(),
                dir.join("seed.yaml").display().to_string(),
            ]);
        }
        if !setup.records {
            args.extend(["--audit-mode".into(), "off".into()]);
        }
        let mut cmd = Command::new(bins.join("portcullis"));
        // No access log line per request on standard error, as nginx here writes none (the
        // request records, which stand in for it, are kept unless the setup turns them off).
        cmd.env("PORTCULLIS_LOG", "warn")
            .arg("--data-dir")
            .arg(dir)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(&args);
        let (child, found) = spawn(cmd, &["gateway: ", "admin: "])?;
        Ok(Self {
            child,
            limiter,
            url: found[0].clone(),
            admin: found[1].clone(),
            credential,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Processes whose CPU counts as the proxy's too (the limiter node).
    fn helpers(&self) -> Vec<u32> {
        self.limiter.iter().map(Child::id).collect()
    }

    fn note(&self) -> String {
        if self.limiter.is_some() {
            "CPU includes the limiter node (Redis not counted)".into()
        } else {
            String::new()
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.limiter.as_mut()) {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

/// Runs the `portcullis` command on the store in `dir`; its standard output.
fn cli(bins: &Path, dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bins.join("portcullis"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
fn http(url: &str, method: &str, path: &str, bearer: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let authority = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let mut stream = std::net::TcpStream::connect(authority).map_err(|e| e.to_string())?;
    let body = if method == "POST" { "{}" } else { "" };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {authority}\r\nauthorization: Bearer {bearer}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A change made through the management API: how long the API took to answer, and how long
/// after its answer the data plane showed it.
struct Propagation {
    issue_call: Duration,
    issued: Duration,
    revoke_call: Duration,
    revoked: Duration,
}

/// How long changes made through the management API take on the node that made them: a token
/// issued (from the API's answer to its first accepted request), then revoked (to its first
/// refusal).
fn propagation(bins: &Path, dir: &Path, node: &Gateway) -> Result<Propagation, String> {
    let out = cli(
        bins,
        dir,
        &[
            "operator",
            "token",
            "--id",
            "bench-admin",
            "--role",
            "admin",
        ],
    )?;
    let operator = out
        .lines()
        .find(|l| l.starts_with("pco_"))
        .ok_or("no operator token printed")?;
    let credentials = "/api/v1/clients/load/profiles/load-sbx/credentials";
    let asked = std::time::Instant::now();
    let (status, body) = http(&node.admin, "POST", credentials, operator)?;
    let issue_call = asked.elapsed();
    if status != 201 {
        return Err(format!("issuing a token answered {status}: {body}"));
    }
    let issued: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let token = issued["token"].as_str().ok_or("no token issued")?;
    let id = issued["credential"].as_str().ok_or("no credential id")?;
    // Accepted: anything but 401; refused: 401.
    let until = |accepted: bool, token: &str| -> Result<Duration, String> {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            if (http(&node.url, "GET", "/bench/small", token)?.0 != 401) == accepted {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err("no change within two minutes".into())
    };
    let issued = until(true, token)?;
    let asked = std::time::Instant::now();
    let (status, body) = http(
        &node.admin,
        "DELETE",
        &format!("{credentials}/{id}"),
        operator,
    )?;
    let revoke_call = asked.elapsed();
    if status != 200 {
        return Err(format!("revoking the token answered {status}: {body}"));
    }
    let revoked = until(false, token)?;
    Ok(Propagation {
        issue_call,
        issued,
        revoke_call,
        revoked,
    })
}

/// Resident memory of a process now, in MiB.
fn resident_mib_of(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Starts `cmd` and waits for a line starting with each of `prefixes`; the rest of each.
fn spawn(mut cmd: Command, prefixes: &[&str]) -> Result<(Child, Vec<String>), String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut found = vec![None; prefixes.len()];
    while found.iter().any(Option::is_none) {
        let Some(Ok(line)) = lines.next() else {
            return Err("the process exited before it was ready".into());
        };
        for (slot, prefix) in found.iter_mut().zip(prefixes) {
            if let Some(rest) = line.trim().strip_prefix(prefix) {
                *slot = Some(rest.trim().to_owned());
            }
        }
    }
    // Keep reading, so that the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((child, found.into_iter().flatten().collect()))
}

/// One scale measurement: what was varied, its value, and the result.
struct Scale {
    what: String,
    value: String,
    result: String,
}

fn scale_runs(
    runtime: &tokio::runtime::Runtime,
    bins: &Path,
    work: &Path,
    upstream: SocketAddr,
    sizes: &Sizes,
    connections: usize,
) -> Result<Vec<Scale>, String> {
    let mut out = Vec::new();
    let setup = setup_of("routing");
    for operations in [10, 10_000, 100_000] {
        let dir = work.join(format!("scale-ops-{operations}"));
        let node = Gateway::start(bins, &dir, upstream, &setup, None, operations)?;
        let m = scale_load(runtime, sizes, connections, &node);
        out.push(Scale {
            what: "operations in the catalogue (full policy, closed loop)".into(),
            value: operations.to_string(),
            result: format!(
                "{}, peak memory {:.0} MiB",
                throughput(&m),
                m.peak_mib.unwrap_or(0.0)
            ),
        });
    }
    let mut resident_at_ten = None;
    for other_tokens in [10, 1_000_000] {
        let setup = Setup {
            other_tokens,
            ..setup_of("tokens")
        };
        let dir = work.join(format!("scale-tokens-{other_tokens}"));
        let started = std::time::Instant::now();
        let node = Gateway::start(bins, &dir, upstream, &setup, None, 10)?;
        let load_time = started.elapsed();
        // Settled after start: what the tokens keep, not what loading them took.
        std::thread::sleep(Duration::from_secs(2));
        let resident = resident_mib_of(node.pid()).unwrap_or(0.0);
        let m = scale_load(runtime, sizes, connections, &node);
        // Measured, or said why not: the rest of the row stands either way.
        let changes = match propagation(bins, &dir, &node) {
            Ok(p) => format!(
                "issuing a token through the API answers in {:.2} s and the token works {:.3} s later; revoking answers in {:.2} s and the token is refused {:.3} s later",
                p.issue_call.as_secs_f64(),
                p.issued.as_secs_f64(),
                p.revoke_call.as_secs_f64(),
                p.revoked.as_secs_f64()
            ),
            Err(e) => format!("changes through the API not measured: {e}"),
        };
        let per_token = match resident_at_ten {
            Some(base) if other_tokens > 10 => format!(
                "; {:.0} bytes per token",
                (resident - base) * 1024.0 * 1024.0 / other_tokens as f64
            ),
            _ => String::new(),
        };
        resident_at_ten.get_or_insert(resident);
        out.push(Scale {
            what: "API tokens issued (full policy, closed loop)".into(),
            value: other_tokens.to_string(),
            result: format!(
                "{}; resident {resident:.0} MiB after start{per_token}, peak {:.0} MiB; apply and start {:.1} s; {changes}",
                throughput(&m),
                m.peak_mib.unwrap_or(0.0),
                load_time.as_secs_f64(),
            ),
        });
    }
    let n = 1_000_000;
    let child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["--limiter-keys", &n.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    let measured: Vec<(String, String)> =
        serde_json::from_slice(&child.stdout).map_err(|e| format!("limiter keys: {e}"))?;
    out.extend(measured.into_iter().map(|(what, result)| Scale {
        what,
        value: n.to_string(),
        result,
    }));
    Ok(out)
}

/// A scale run's load: the small operation, closed loop, with the node's credential.
fn scale_load(
    runtime: &tokio::runtime::Runtime,
    sizes: &Sizes,
    connections: usize,
    node: &Gateway,
) -> Measured {
    measure(
        runtime,
        sizes,
        connections,
        &node.url,
        std::slice::from_ref(&node.credential),
        &rest("/bench/small"),
        Some(node.pid()),
        &[],
    )
}

fn throughput(m: &Measured) -> String {
    format!(
        "{:.0} req/s, p99 {:.2} ms",
        m.report.requests_per_second,
        m.report.latency.p99_us as f64 / 1000.0
    )
}

fn setup_of(name: &'static str) -> Setup {
    Setup {
        name,
        limits: true,
        records: true,
        jwt: false,
        remote_limiter: false,
        mcp: false,
        other_tokens: 0,
    }
}

/// Memory for `n` distinct limiter keys: the in-process engine (this process's resident memory
/// before and after) and Redis (`used_memory` before and after, under a fresh prefix, deleted
/// afterwards).
async fn limiter_keys(n: usize) -> Vec<Scale> {
    use portcullis_limiter::counters::{Counters, MemoryCounters, RedisCounters};
    use portcullis_limiter::engine::{Engine, Subject};
    let policy: portcullis_limiter::policy::Policy = serde_saphyr::from_str(
        "name: bench\nlimits:\n  - {name: daily, scope: client, count: 1000000, window: day}\n",
    )
    .expect("a policy");
    let mut catalog = portcullis_limiter::policy::Catalog {
        version: 1,
        ..Default::default()
    };
    catalog.policies.insert("bench".into(), policy);
    let names: Vec<String> = (0..n).map(|i| format!("client-{i}")).collect();
    let fill = |engine: Engine| {
        let names = &names;
        async move {
            for name in names {
                let subject = Subject {
                    client: name,
                    profile: "p",
                    collection: "c",
                    operation: "o",
                    source_ip: None,
                };
                let _ = engine
                    .check(&["bench"], &subject, 1, time::OffsetDateTime::now_utc())
                    .await;
            }
            engine
        }
    };
    let mut out = Vec::new();
    let before = resident_mib();
    let engine = fill(Engine::new(
        catalog.clone(),
        Counters::Memory(MemoryCounters::new(n)),
    ))
    .await;
    let after = resident_mib();
    out.push(Scale {
        what: "limiter keys, in-process engine".into(),
        value: n.to_string(),
        result: format!(
            "{:.0} MiB resident ({:.0} bytes per key)",
            after - before,
            (after - before) * 1024.0 * 1024.0 / n as f64
        ),
    });
    drop(engine);
    if let Ok(url) = std::env::var("PORTCULLIS_TEST_REDIS_URL") {
        let prefix = format!("pcbench-keys-{}", std::process::id());
        let settings = portcullis_limiter::RedisSettings {
            url: url.clone(),
            prefix: prefix.clone(),
            pool_size: 4,
            timeout: Duration::from_secs(5),
        };
        let used = || {
            Command::new("redis-cli")
                .args(["-u", &url, "info", "memory"])
                .output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
                        l.strip_prefix("used_memory:")
                            .and_then(|v| v.trim().parse::<f64>().ok())
                    })
                })
        };
        if let (Some(before), Ok(counters)) = (used(), RedisCounters::new(&settings)) {
            let engine = fill(Engine::new(catalog, Counters::Redis(counters))).await;
            drop(engine);
            let after = used().unwrap_or(before);
            out.push(Scale {
                what: "limiter keys, Redis".into(),
                value: n.to_string(),
                result: format!(
                    "{:.0} MiB used_memory ({:.0} bytes per key)",
                    (after - before) / 1048576.0,
                    (after - before) / n as f64
                ),
            });
            let _ = Command::new("sh")
                .args([
                    "-c",
                    &format!("redis-cli -u '{url}' --scan --pattern '{prefix}*' | xargs -r -n 1000 redis-cli -u '{url}' del >/dev/null"),
                ])
                .status();
        }
    }
    out
}

/// This process's resident memory, in MiB.
fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |k| k / 1024.0)
}

fn render(rows: &[Row], scale: &[Scale], notes: &[String], args: &Args) -> String {
    let closed = |setup: &str| {
        rows.iter()
            .find(|r| r.setup == setup && r.mode == "closed")
            .map(|r| r.measured.report.requests_per_second)
    };
    // The 1 KiB rows compare with the 1 KiB references.
    let references = |row: &Row| {
        if row.setup.contains("1 KiB") {
            (closed(KIB_NGINX), closed(KIB_DIRECT))
        } else {
            (
                closed("nginx proxy_pass (reference)"),
                closed("direct (upstream alone)"),
            )
        }
    };
    // The upstream alone at the same open-loop rate: what a proxy adds is its p99 less this.
    let direct_p99 = |mode: &str| {
        rows.iter()
            .find(|r| r.setup == "direct (upstream alone)" && r.mode == mode && mode != "closed")
            .map(|r| r.measured.report.latency.p99_us)
    };
    let mut text = String::new();
    let _ = writeln!(text, "# Load test results\n");
    let _ = writeln!(
        text,
        "Generated by `target/release/portcullis-benches {}{}` (after `cargo build --release --bins -p portcullis-benches -p portcullis -p portcullis-limiter`) on {}; not edited by hand.\n",
        if args.full {
            "--full"
        } else if args.smoke {
            "--smoke"
        } else {
            "--quick"
        },
        args.output
            .as_ref()
            .map(|p| format!(" --output {}", p.display()))
            .unwrap_or_default(),
        time::OffsetDateTime::now_utc().date()
    );
    let _ = writeln!(text, "- Machine: {}", machine());
    let _ = writeln!(
        text,
        "- Versions: portcullis {}, {}, {}",
        env!("CARGO_PKG_VERSION"),
        version(&["rustc", "--version"]),
        version(&["nginx", "-v"])
    );
    let _ = writeln!(
        text,
        "- Load: one generator in this process (2 threads) and the upstream beside it, the proxy in its own process, all on this machine; {} connections closed loop; open loop at 50% and 80% of nginx's closed-loop peak (above what a setup sustains, its queue grows for the whole run, and its latency with it) and, for Portcullis, at 50% of the setup's own peak; open-loop latency counts from when each request was due, and \"p99 added\" is a row's p99 less the upstream's alone at the same rate. Rows answer 17 bytes of JSON unless they say 1 KiB. Neither proxy writes an access log line per request (nginx `access_log off`, Portcullis `PORTCULLIS_LOG=warn`); Portcullis keeps its request records where the setup says so. The remote limiter runs with `--limiter-timeout 1s`. The machine is shared and noisy: compare rows of one run, not runs.\n",
        args.connections
    );
    let _ = writeln!(
        text,
        "| setup | load | req/s | p50 ms | p99 ms | p99.9 ms | p99 added ms | proxy CPU | proxy CPU µs/req | proxy peak MiB | vs nginx | vs direct |"
    );
    let _ = writeln!(
        text,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in rows {
        let r = &row.measured.report;
        let (nginx, direct) = references(row);
        let ratio = |base: Option<f64>| match (base, row.mode.as_str()) {
            (Some(b), "closed") if b > 0.0 => format!("{:.2}", r.requests_per_second / b),
            _ => "".into(),
        };
        let added = match direct_p99(&row.mode) {
            Some(base) if !row.setup.starts_with("direct") => {
                format!("{:.2}", (r.latency.p99_us as f64 - base as f64) / 1000.0)
            }
            _ => String::new(),
        };
        let per_request = match row.measured.cpu {
            Some(cpu) if r.requests_per_second > 0.0 => {
                format!("{:.1}", cpu * 1e6 / r.requests_per_second)
            }
            _ => String::new(),
        };
        let _ = writeln!(
            text,
            "| {}{} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
            row.setup,
            row.note
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            row.mode,
            r.requests_per_second,
            r.latency.p50_us as f64 / 1000.0,
            r.latency.p99_us as f64 / 1000.0,
            r.latency.p999_us as f64 / 1000.0,
            added,
            row.measured
                .cpu
                .map(|c| format!("{c:.2}"))
                .unwrap_or_default(),
            per_request,
            row.measured
                .peak_mib
                .map(|m| format!("{m:.0}"))
                .unwrap_or_default(),
            ratio(nginx),
            ratio(direct),
        );
    }
    let late: u64 = rows.iter().map(|r| r.measured.report.late).sum();
    if late > 0 {
        let _ = writeln!(
            text,
            "\n{late} open-loop requests were sent more than 1 ms late (the generator fell behind); their latency counts from when they were due."
        );
    }
    if !scale.is_empty() {
        let _ = writeln!(
            text,
            "\n## Scale\n\n| varied | value | result |\n|---|---:|---|"
        );
        for s in scale {
            let _ = writeln!(text, "| {} | {} | {} |", s.what, s.value, s.result);
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(text, "\n## Notes\n");
        for n in notes {
            let _ = writeln!(text, "- {n}");
        }
    }
    text
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|k| format!("{:.0} GiB", k / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem}")
}

fn version(cmd: &[&str]) -> String {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .trim()
                .replace("nginx version: ", "")
                .to_owned()
        })
        .unwrap_or_else(|| format!("{} not found", cmd[0]))
}
