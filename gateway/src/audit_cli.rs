//! `portcullis audit`: query request records (NDJSON) and verify their hash chains. Both read
//! the store directly, so they default to the same data directory as `serve`.

use std::io::Write;

use crate::audit::writer::{GENESIS, link};
use crate::store::{AuditFilter, Store};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Print request records as NDJSON, oldest first.
    Query(Box<QueryArgs>),
    /// Check the hash chains: every record present, in order, unedited.
    Verify {
        /// Only this node's chain (default: every node's).
        #[arg(long)]
        node: Option<String>,
        /// First sequence number to check.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last sequence number to check (default: the newest).
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// `request` (data-plane requests) or `change` (control-plane actions); both by default.
    #[arg(long, value_parser = ["request", "change"])]
    kind: Option<String>,
    #[arg(long)]
    client: Option<String>,
    #[arg(long)]
    profile: Option<String>,
    #[arg(long)]
    partner: Option<String>,
    #[arg(long)]
    collection: Option<String>,
    #[arg(long)]
    operation: Option<String>,
    /// `rest` or `mcp`.
    #[arg(long)]
    channel: Option<String>,
    /// `allowed`, `denied` or `error`.
    #[arg(long)]
    outcome: Option<String>,
    /// An error code, e.g. `rate_limited`.
    #[arg(long)]
    reason: Option<String>,
    #[arg(long)]
    status: Option<u16>,
    /// From this time (RFC 3339, inclusive).
    #[arg(long)]
    since: Option<String>,
    /// Until this time (RFC 3339, exclusive).
    #[arg(long)]
    until: Option<String>,
    /// At most this many records.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    /// Continue after the cursor a previous page printed.
    #[arg(long)]
    after: Option<String>,
}

/// Runs one `portcullis audit` command. Returns whether the check (if any) passed.
pub async fn run(store: &Store, command: AuditCommand) -> anyhow::Result<bool> {
    match command {
        AuditCommand::Query(q) => {
            for (name, time) in [("--since", &q.since), ("--until", &q.until)] {
                if let Some(t) = time {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .map_err(|_| anyhow::anyhow!("{name} '{t}' is not an RFC 3339 time"))?;
                }
            }
            let after = q
                .after
                .as_deref()
                .map(|c| {
                    let mut parts = c.rsplitn(3, ',');
                    let seq = parts.next().and_then(|s| s.parse().ok());
                    let node = parts.next();
                    let at = parts.next();
                    match (at, node, seq) {
                        (Some(at), Some(node), Some(seq)) => {
                            Ok((at.to_owned(), node.to_owned(), seq))
                        }
                        _ => Err(anyhow::anyhow!(
                            "--after '{c}' is not a cursor printed by a previous query"
                        )),
                    }
                })
                .transpose()?;
            let filter = AuditFilter {
                kind: q.kind,
                client: q.client,
                profile: q.profile,
                partner: q.partner,
                collection: q.collection,
                operation: q.operation,
                channel: q.channel,
                outcome: q.outcome,
                reason: q.reason,
                status: q.status,
                since: q.since.map(|t| normalize(&t)),
                until: q.until.map(|t| normalize(&t)),
                after,
                limit: q.limit,
            };
            let rows = store.audit_query(&filter).await?;
            let mut out = std::io::stdout().lock();
            for row in &rows {
                writeln!(out, "{}", row.body)?;
            }
            if rows.len() == filter.limit.clamp(1, 10_000) as usize
                && let Some(last) = rows.last()
            {
                eprintln!(
                    "more records follow: --after '{},{},{}'",
                    last.recorded_at, last.node, last.seq
                );
            }
            Ok(true)
        }
        AuditCommand::Verify { node, from, to } => {
            let known = store.audit_nodes().await?;
            let nodes = match node {
                Some(n) if !known.contains(&n) => {
                    println!("{n}: no records");
                    return Ok(false);
                }
                Some(n) => vec![n],
                None => known,
            };
            let mut intact = true;
            for node in nodes {
                match verify(store, &node, from, to.unwrap_or(u64::MAX)).await? {
                    Ok((first, last, n)) => {
                        println!("{node}: {n} records, {first}..{last}, chain intact")
                    }
                    Err(broken) => {
                        intact = false;
                        println!("{node}: BROKEN: {broken}");
                    }
                }
            }
            Ok(intact)
        }
    }
}

/// Stored timestamps are RFC 3339 in UTC with nanoseconds; filters compare as text, so a
/// filter time is written the same way.
pub(crate) fn normalize(t: &str) -> String {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(crate::audit::timestamp)
        .unwrap_or_else(|_| t.to_owned())
}

/// Walks `node`'s chain from `from` to `to`: the range checked, or the first broken link.
pub(crate) async fn verify(
    store: &Store,
    node: &str,
    from: u64,
    to: u64,
) -> anyhow::Result<Result<(u64, u64, u64), String>> {
    let mut expected_seq = from;
    let mut previous: Option<String> = None;
    let mut count = 0;
    let mut last = from;
    loop {
        let page = store.audit_chain(node, expected_seq, to).await?;
        let Some(_) = page.first() else { break };
        for (seq, body, prev, hash) in page.iter().take(10_000) {
            if *seq != expected_seq {
                return Ok(Err(format!(
                    "record {expected_seq} is missing (the next present is {seq}): deleted"
                )));
            }
            let must_follow = match (&previous, *seq) {
                (Some(p), _) => Some(p.as_str()),
                (None, 1) => Some(GENESIS),
                (None, _) => None,
            };
            if let Some(p) = must_follow
                && p != prev
            {
                return Ok(Err(format!(
                    "record {seq} does not follow record {}: removed, reordered or replaced",
                    seq - 1
                )));
            }
            if link(prev, body) != *hash {
                return Ok(Err(format!("record {seq} does not match its hash: edited")));
            }
            previous = Some(hash.clone());
            expected_seq = seq + 1;
            last = *seq;
            count += 1;
        }
        if page.len() < 10_000 {
            break;
        }
    }
    Ok(Ok((from, last, count)))
}
