//! Prometheus metrics, served at `/metrics` on the admin listener. They are derived from the
//! request records, so metrics and audit trail never disagree: requests by collection,
//! operation, client, profile, environment, channel, outcome and reason; where the time went
//! (gateway, limiter, upstream); limiter decisions per limit; and the audit trail's own
//! health. Client and profile labels are kept for a bounded number of clients (the first ones
//! seen); the rest are counted as `_other`, so a million clients cannot blow up the series.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::audit::{RequestRecord, Stats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    collection: String,
    operation: String,
    client: String,
    profile: String,
    environment: String,
    channel: String,
    outcome: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    /// `total`, `gateway` (its own share), `limiter` or `upstream`.
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    policy: String,
    limit: String,
    result: &'static str,
}

type Histograms = Family<PhaseLabels, Histogram, fn() -> Histogram>;

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms,
    decisions: Family<DecisionLabels, Counter>,
    audit_queued: Gauge,
    audit_spooled: Gauge,
    audit_written: Gauge,
    audit_dropped: Gauge,
    audit_sink_up: Gauge,
    limiter_fallbacks: Gauge,
    labelled_clients: Mutex<HashSet<String>>,
    max_clients: usize,
}

/// The label value for clients beyond the bound.
pub const OTHER: &str = "_other";

impl Metrics {
    /// Metrics keeping client and profile labels for at most `max_clients` clients.
    pub fn new(max_clients: usize) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "portcullis_requests",
            "Data-plane requests, by what was called, who called and how it ended",
            requests.clone(),
        );
        let latency: Histograms = Family::new_with_constructor(|| {
            // 50 µs to about 52 s (beyond the default 30 s upstream timeout).
            Histogram::new(exponential_buckets(0.000_05, 2.0, 21))
        });
        registry.register(
            "portcullis_request_duration_seconds",
            "Where a request's time went: total, the gateway's own share, the limiter, the upstream",
            latency.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "portcullis_limit_decisions",
            "Limiter decisions per limit consulted: allowed or refused",
            decisions.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        Self {
            audit_queued: gauge(
                &mut registry,
                "portcullis_audit_queue_depth",
                "Request records emitted, not yet journaled",
            ),
            audit_spooled: gauge(
                &mut registry,
                "portcullis_audit_spooled_records",
                "Request records journaled, not yet in the database",
            ),
            audit_written: gauge(
                &mut registry,
                "portcullis_audit_written_records",
                "Request records written to the database since start",
            ),
            audit_dropped: gauge(
                &mut registry,
                "portcullis_audit_dropped_records",
                "Request records lost (must stay 0)",
            ),
            audit_sink_up: gauge(
                &mut registry,
                "portcullis_audit_sink_up",
                "1 while the database takes request records",
            ),
            limiter_fallbacks: gauge(
                &mut registry,
                "portcullis_limiter_fallbacks",
                "Requests limited on this node because no limiter answered (local_limit policies)",
            ),
            registry,
            requests,
            latency,
            decisions,
            labelled_clients: Mutex::new(HashSet::new()),
            max_clients,
        }
    }

    /// Counts one finished request.
    pub fn observe(&self, r: &RequestRecord) {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let (client, profile) = match &r.who.client {
            Some(client) if self.labelled(client) => (client.clone(), text(&r.who.profile)),
            Some(_) => (OTHER.to_owned(), OTHER.to_owned()),
            None => (String::new(), String::new()),
        };
        self.requests
            .get_or_create(&RequestLabels {
                collection: text(&r.what.collection),
                operation: text(&r.what.operation),
                client,
                profile,
                environment: text(&r.who.environment),
                channel: r.channel.clone(),
                outcome: r.outcome.as_str().to_owned(),
                reason: text(&r.reason),
            })
            .inc();
        let seconds = |us: u64| us as f64 / 1e6;
        let l = &r.latency_us;
        for (phase, us) in [
            ("total", l.total),
            ("gateway", l.gateway),
            ("limiter", l.limiter),
            ("upstream", l.upstream),
        ] {
            if us > 0 || phase == "total" || phase == "gateway" {
                self.latency
                    .get_or_create(&PhaseLabels { phase })
                    .observe(seconds(us));
            }
        }
        for limit in &r.limits {
            self.decisions
                .get_or_create(&DecisionLabels {
                    policy: limit.policy.clone(),
                    limit: limit.limit.clone(),
                    result: if limit.allowed { "allowed" } else { "refused" },
                })
                .inc();
        }
    }

    /// Whether this client gets its own label values.
    fn labelled(&self, client: &str) -> bool {
        let mut known = self
            .labelled_clients
            .lock()
            .expect("the label set lock is never poisoned");
        if known.contains(client) {
            return true;
        }
        if known.len() < self.max_clients {
            known.insert(client.to_owned());
            return true;
        }
        false
    }

    /// The OpenMetrics text exposition, with the audit trail's counters as they stand.
    pub fn render(&self, audit: &Stats, fallbacks: u64) -> String {
        let get = |v: &std::sync::atomic::AtomicU64| {
            i64::try_from(v.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
        };
        self.audit_queued.set(get(&audit.queued));
        self.audit_spooled.set(get(&audit.spooled));
        self.audit_written.set(get(&audit.written));
        self.audit_dropped.set(get(&audit.dropped));
        self.audit_sink_up
            .set(i64::from(audit.sink_ok.load(Ordering::Relaxed)));
        self.limiter_fallbacks
            .set(i64::try_from(fallbacks).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}
