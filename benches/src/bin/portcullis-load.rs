//! `portcullis-load`: load for any Portcullis deployment (or any HTTP service): a mix of REST
//! calls and MCP tool calls, at a fixed rate (open loop) or with a fixed number of connections
//! (closed loop), with a progress line, and a summary of latency percentiles and answers by
//! status, error code and principal — as text or JSON.
//!
//! ```text
//! portcullis-load --url http://127.0.0.1:8080 --token "$TOKEN" --rate 500 --duration 30s \
//!     --call 'GET /demo/hello' --call '3*mcp:get-order {"id":"42"}'
//! ```

use std::io::Write as _;
use std::time::Duration;

use clap::Parser;
use portcullis_benches::load::{Call, Mode, Plan, Report, Tls, run_with};

#[derive(Parser)]
#[command(
    name = "portcullis-load",
    version,
    about = "Load a Portcullis deployment with REST and MCP calls"
)]
struct Args {
    /// The gateway's URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// A credential (sent as `Authorization: Bearer`); repeat for several principals, used in
    /// turn.
    #[arg(long = "token", env = "PORTCULLIS_LOAD_TOKEN")]
    tokens: Vec<String>,
    /// A file with one credential per line (besides --token).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// A call of the mix, optionally weighted: `GET /path`, `POST /path {json}`,
    /// `mcp:tool {json}`, `3*GET /path`. Repeatable.
    #[arg(long = "call", required = true)]
    calls: Vec<String>,
    /// Requests per second (open loop: latency counted from when each request was due).
    #[arg(long, conflicts_with = "concurrency")]
    rate: Option<f64>,
    /// Connections, each sending as soon as its last answer arrived (closed loop; the default,
    /// with 16).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Most connections open at once at a fixed rate.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// How long to run, e.g. `30s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// For an `https://` URL: also trust the certificates in this PEM file (a private CA);
    /// public roots are trusted anyway.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let mut tokens = args.tokens.clone();
    if let Some(file) = &args.token_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    let mut calls = Vec::new();
    for text in &args.calls {
        let (weight, call) = match text.split_once('*') {
            Some((n, rest)) if n.trim().parse::<u32>().is_ok() => {
                (n.trim().parse().expect("checked"), rest)
            }
            _ => (1, text.as_str()),
        };
        calls.push((Call::parse(call)?, weight));
    }
    let mode = match (args.rate, args.concurrency) {
        (Some(rate), _) if rate > 0.0 => Mode::Open {
            rate,
            connections: args.max_connections,
        },
        (Some(_), _) => return Err("--rate must be above 0".into()),
        (None, concurrency) => Mode::Closed {
            connections: concurrency.unwrap_or(16),
        },
    };
    let plan = Plan {
        base: args.url.trim_end_matches('/').to_owned(),
        tokens,
        calls,
        mode,
        duration: args.duration,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let progress = |done: u64, elapsed: Duration| {
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
        eprint!(
            "\r[{:>4.0}s] {done} answered, {rate:.0}/s   ",
            elapsed.as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    };
    let tls = Tls {
        ca_pem: match &args.ca_file {
            Some(file) => Some(
                std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?,
            ),
            None => None,
        },
    };
    let report = runtime.block_on(run_with(&plan, &tls, Some(&progress)))?;
    eprintln!();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", summary(&report));
    }
    Ok(())
}

fn summary(r: &Report) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let mut text = format!(
        "{} answered in {:.1} s: {:.0}/s; {} without an answer{}\n",
        r.requests,
        r.seconds,
        r.requests_per_second,
        r.failed,
        if r.late > 0 {
            format!("; {} sent late (the generator could not keep up)", r.late)
        } else {
            String::new()
        }
    );
    text.push_str(&format!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
        ms(r.latency.p50_us),
        ms(r.latency.p90_us),
        ms(r.latency.p99_us),
        ms(r.latency.p999_us),
        ms(r.latency.max_us)
    ));
    let list = |m: &std::collections::BTreeMap<u16, u64>| {
        m.iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    text.push_str(&format!("statuses: {}\n", list(&r.statuses)));
    if !r.codes.is_empty() {
        let codes: Vec<String> = r.codes.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        text.push_str(&format!("error codes: {}\n", codes.join(", ")));
    }
    if r.by_principal.len() > 1 {
        for (principal, statuses) in &r.by_principal {
            let codes = r
                .codes_by_principal
                .get(principal)
                .map(|c| {
                    let c: Vec<String> = c.iter().map(|(c, n)| format!("{c}: {n}")).collect();
                    format!(" ({})", c.join(", "))
                })
                .unwrap_or_default();
            text.push_str(&format!("  {principal}: {}{codes}\n", list(statuses)));
        }
    }
    text
}
