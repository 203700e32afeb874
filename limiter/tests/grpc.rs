//! The check service over real gRPC (HTTP/2 on a loopback port): decisions, per-limit status,
//! and bad input refused with INVALID_ARGUMENT without charging anything.

use std::sync::Arc;

use pb::check_service_client::CheckServiceClient;
use pb::check_service_server::CheckServiceServer;
use portcullis_limiter::engine::MemoryEngine;
use portcullis_limiter::grpc::CheckService;
use portcullis_limiter::policy::{Limit, LimitKind, Policy, QuotaWindow, RatePeriod, Scope};
use portcullis_proto::limiter::v1 as pb;

async fn serve() -> CheckServiceClient<tonic::transport::Channel> {
    let policy = Policy {
        name: "partner-standard".into(),
        limits: vec![
            Limit {
                name: "daily".into(),
                scope: Scope::Profile,
                kind: LimitKind::Quota {
                    count: 3,
                    window: QuotaWindow::Day,
                },
            },
            Limit {
                name: "burst".into(),
                scope: Scope::Client,
                kind: LimitKind::Rate {
                    count: 100,
                    per: RatePeriod::Second,
                },
            },
        ],
    };
    let service = CheckService::new(Arc::new(MemoryEngine::new(10_000)), vec![policy]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CheckServiceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    CheckServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn request(policies: &[&str], hits: u64, source_ip: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        policies: policies.iter().map(|p| p.to_string()).collect(),
        principal: Some(pb::Principal {
            client: "acme".into(),
            profile: "acme-sbx".into(),
            environment: "sandbox".into(),
            partner: "acme".into(),
        }),
        product: Some(pb::Product {
            collection: "orders".into(),
            operation: "list".into(),
        }),
        source_ip: source_ip.into(),
        hits,
    }
}

#[tokio::test]
async fn checks_over_grpc() {
    let mut client = serve().await;
    for remaining in [2, 1, 0] {
        let r = client
            .check(request(&["partner-standard"], 1, ""))
            .await
            .unwrap()
            .into_inner();
        assert!(r.allowed);
        let daily = r.limits.iter().find(|l| l.limit == "daily").unwrap();
        assert_eq!((daily.remaining, daily.quota), (remaining, true));
    }
    // Bad input: clear status codes, nothing charged.
    let bad = [
        request(&["no-such-policy"], 1, ""),
        request(&["partner-standard"], 0, ""),
        request(&["partner-standard"], 1, "not-an-ip"),
        pb::CheckRequest {
            principal: None,
            ..request(&["partner-standard"], 1, "")
        },
    ];
    for req in bad {
        let status = client.check(req).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    let r = client
        .check(request(&["partner-standard"], 1, "192.0.2.1"))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.allowed);
    let daily = r.limits.iter().find(|l| l.limit == "daily").unwrap();
    assert!(!daily.allowed && daily.quota && daily.retry_after_ms > 0);
    // The refused request charged nothing: the rate shows at most the 3 hits used (fewer if
    // it has refilled meanwhile), not a fourth.
    let burst = r.limits.iter().find(|l| l.limit == "burst").unwrap();
    assert!(burst.allowed);
    assert!((97..=100).contains(&burst.remaining), "{}", burst.remaining);
}
