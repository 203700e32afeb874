//! The limiter binary over real gRPC: checks, quota management with change records, service
//! tokens, bad input refused with clear status codes and no effect, and definitions that
//! survive a restart.

mod support;

use portcullis_proto::limiter::v1 as pb;
use support::*;
use tonic::Code;

/// A limiter node on a data directory under `dir`, seeded with [`SEED`], and its tokens.
async fn seeded(dir: &std::path::Path) -> (Node, Tokens) {
    let tokens = tokens(dir);
    let seed = dir.join("seed.yaml");
    std::fs::write(&seed, SEED).unwrap();
    let data = dir.join("data");
    let node = start(
        &tokens,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--seed",
            seed.to_str().unwrap(),
        ],
    )
    .await;
    (node, tokens)
}

#[tokio::test]
async fn a_batch_decides_each_check_as_if_sent_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (node, tokens) = seeded(dir.path()).await;
    let mut checker = node.checker(&tokens.check);
    // acme's profile may make 3 requests a day: five in one batch, three pass. Checks that
    // are wrong fail alone, with the code their unary call would have had.
    let mut checks = vec![check_request("partner-standard", "acme"); 5];
    checks.push(check_request("no-such-policy", "acme"));
    checks.push(pb::CheckRequest {
        hits: 0,
        ..check_request("partner-standard", "acme")
    });
    checks.push(check_request("partner-standard", "globex"));
    let results = checker
        .check_batch(pb::CheckBatchRequest { checks })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 8);
    let outcome = |r: &pb::CheckResult| match r.result.as_ref().unwrap() {
        pb::check_result::Result::Decision(d) => Ok(d.allowed),
        pb::check_result::Result::Error(e) => Err(Code::from_i32(e.code)),
    };
    let acme: Vec<_> = results[..5].iter().map(outcome).collect();
    assert_eq!(
        acme.iter().filter(|o| **o == Ok(true)).count(),
        3,
        "{acme:?}"
    );
    assert_eq!(
        acme.iter().filter(|o| **o == Ok(false)).count(),
        2,
        "{acme:?}"
    );
    assert_eq!(outcome(&results[5]), Err(Code::NotFound));
    assert_eq!(outcome(&results[6]), Err(Code::InvalidArgument));
    assert_eq!(outcome(&results[7]), Ok(true));
    // The batch counted exactly what it allowed: a sixth acme check is refused.
    let r = checker
        .check(check_request("partner-standard", "acme"))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.allowed);

    // An empty or oversized batch is refused whole, and counts nothing.
    for n in [0, 1_001] {
        let status = checker
            .check_batch(pb::CheckBatchRequest {
                checks: vec![check_request("partner-standard", "initech"); n],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{n}: {status:?}");
    }
    let r = checker
        .check(check_request("partner-standard", "initech"))
        .await
        .unwrap()
        .into_inner();
    let daily = r.limits.iter().find(|l| l.limit == "daily").unwrap();
    assert_eq!(daily.remaining, 2);
}

#[tokio::test]
async fn checks_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let (node, tokens) = seeded(dir.path()).await;
    let mut checker = node.checker(&tokens.check);
    for remaining in [2, 1, 0] {
        let r = checker
            .check(check_request("partner-standard", "acme"))
            .await
            .unwrap()
            .into_inner();
        assert!(r.allowed);
        let daily = r.limits.iter().find(|l| l.limit == "daily").unwrap();
        assert_eq!((daily.remaining, daily.quota), (remaining, true));
        assert_eq!((daily.limit_count, daily.window_seconds), (3, 86_400));
    }
    // Bad input: clear status codes, nothing charged.
    let bad = [
        (check_request("no-such-policy", "acme"), Code::NotFound),
        (
            pb::CheckRequest {
                hits: 0,
                ..check_request("partner-standard", "acme")
            },
            Code::InvalidArgument,
        ),
        (
            pb::CheckRequest {
                hits: u64::MAX,
                ..check_request("partner-standard", "acme")
            },
            Code::InvalidArgument,
        ),
        (
            pb::CheckRequest {
                source_ip: "not-an-ip".into(),
                ..check_request("partner-standard", "acme")
            },
            Code::InvalidArgument,
        ),
        (
            pb::CheckRequest {
                principal: None,
                ..check_request("partner-standard", "acme")
            },
            Code::InvalidArgument,
        ),
        (
            check_request("partner-standard", "ac}me"),
            Code::InvalidArgument,
        ),
    ];
    for (req, code) in bad {
        let status = checker.check(req).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }
    let r = checker
        .check(pb::CheckRequest {
            source_ip: "192.0.2.1".into(),
            ..check_request("partner-standard", "acme")
        })
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

    // Without a token, or with an unknown one, nothing is answered.
    let anonymous = node
        .manager(None)
        .list_policies(pb::ListPoliciesRequest {})
        .await;
    assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);
    let mut forged = node.checker("pcl_forged");
    let status = forged
        .check(check_request("partner-standard", "x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // A gateway's check token cannot manage quotas.
    let status = node
        .manager(Some(&tokens.check))
        .delete_policy(pb::PolicyName {
            name: "partner-standard".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // Metrics count the checks by result.
    let metrics = reqwest_get(&node.metrics).await;
    for (result, n) in [("allowed", 3), ("refused", 1), ("invalid", 6)] {
        let line = format!("portcullis_limiter_checks_total{{result=\"{result}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("portcullis_limiter_store_up 1"));

    // gRPC health answers without a token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(node.channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

/// GET over plain HTTP/1.1 (the metrics endpoint), without an HTTP client library.
async fn reqwest_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

fn gold() -> pb::Policy {
    pb::Policy {
        name: "gold".into(),
        limits: vec![pb::Limit {
            name: "monthly".into(),
            scope: pb::Scope::Client as i32,
            kind: Some(pb::limit::Kind::Quota(pb::Quota {
                count: 10,
                window: pb::QuotaWindow::Month as i32,
            })),
        }],
        on_unavailable: pb::FailureMode::LocalLimit as i32,
    }
}

#[tokio::test]
async fn quota_management_leaves_change_records_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let data = dir.path().join("data");
    let args = ["--data-dir", data.to_str().unwrap()];
    let node = start(&tokens, &args).await;
    let mut ops = node.manager(Some(&tokens.manage));

    let created = ops
        .create_policy(pb::PolicyRequest {
            policy: Some(gold()),
        })
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert_eq!(
        (created.actor.as_str(), created.action.as_str()),
        ("ops-team", "policy.create")
    );
    assert_eq!(created.resource, "policy/gold");
    assert!(created.before.is_empty() && created.after.contains("\"monthly\""));

    // Bad input: clear codes, nothing changed.
    let again = ops
        .create_policy(pb::PolicyRequest {
            policy: Some(gold()),
        })
        .await;
    assert_eq!(again.unwrap_err().code(), Code::AlreadyExists);
    let mut no_scope = gold();
    no_scope.limits[0].scope = 0;
    let mut zero = gold();
    zero.limits[0].kind = Some(pb::limit::Kind::Rate(pb::Rate {
        count: 0,
        per: pb::RatePeriod::Second as i32,
    }));
    let mut absurd = gold();
    absurd.limits[0].kind = Some(pb::limit::Kind::Quota(pb::Quota {
        count: u64::MAX,
        window: pb::QuotaWindow::Day as i32,
    }));
    let mut no_kind = gold();
    no_kind.limits[0].kind = None;
    let mut bad_name = gold();
    bad_name.name = "gold plated".into();
    for policy in [no_scope, zero, absurd, no_kind, bad_name] {
        let status = ops
            .update_policy(pb::PolicyRequest {
                policy: Some(policy),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let missing = ops
        .update_policy(pb::PolicyRequest {
            policy: Some(pb::Policy {
                name: "nope".into(),
                ..gold()
            }),
        })
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let got = ops
        .get_policy(pb::PolicyName {
            name: "gold".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, gold(), "refused updates changed nothing");

    // Overrides: acme gets 2x.
    let o = pb::Override {
        policy: "gold".into(),
        client: "acme".into(),
        profile: String::new(),
        multiplier: 2.0,
        expires_at: String::new(),
        note: "launch".into(),
    };
    ops.set_override(o.clone()).await.unwrap();
    for bad in [
        pb::Override {
            multiplier: 0.0,
            ..o.clone()
        },
        pb::Override {
            multiplier: f64::NAN,
            ..o.clone()
        },
        pb::Override {
            expires_at: "next tuesday".into(),
            ..o.clone()
        },
        pb::Override {
            client: String::new(),
            ..o.clone()
        },
    ] {
        let status = ops.set_override(bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let unknown = ops
        .set_override(pb::Override {
            policy: "nope".into(),
            ..o.clone()
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);

    let mut checker = node.checker(&tokens.check);
    for _ in 0..3 {
        checker.check(check_request("gold", "acme")).await.unwrap();
    }
    let usage = ops
        .get_usage(pb::UsageRequest {
            policy: "gold".into(),
            principal: principal("acme", ""),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (usage.limits[0].limit_count, usage.limits[0].remaining),
        (20, 17)
    );
    let reset = ops
        .reset_usage(pb::UsageRequest {
            policy: "gold".into(),
            principal: principal("acme", ""),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert_eq!(reset.action, "usage.reset");
    let usage = ops
        .get_usage(pb::UsageRequest {
            policy: "gold".into(),
            principal: principal("acme", ""),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.limits[0].remaining, 20);
    let bad_usage = ops
        .get_usage(pb::UsageRequest {
            policy: "gold".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(bad_usage.unwrap_err().code(), Code::InvalidArgument);

    ops.clear_override(pb::ClearOverrideRequest {
        policy: "gold".into(),
        client: "acme".into(),
        profile: String::new(),
    })
    .await
    .unwrap();
    let cleared_again = ops
        .clear_override(pb::ClearOverrideRequest {
            policy: "gold".into(),
            client: "acme".into(),
            profile: String::new(),
        })
        .await;
    assert_eq!(cleared_again.unwrap_err().code(), Code::NotFound);
    ops.set_override(pb::Override {
        client: "globex".into(),
        ..o.clone()
    })
    .await
    .unwrap();

    let changes = ops
        .list_changes(pb::ListChangesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .changes;
    let actions: Vec<_> = changes.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "policy.create",
            "override.set",
            "usage.reset",
            "override.clear",
            "override.set"
        ]
    );
    assert!(changes.iter().all(|c| c.actor == "ops-team"));
    assert!(changes.windows(2).all(|w| w[1].version == w[0].version + 1));
    let later = ops
        .list_changes(pb::ListChangesRequest {
            after_version: 3,
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].action, "override.clear");
    assert!(later[0].before.contains("launch") && later[0].after.is_empty());

    // Definitions survive a restart (counters in memory do not need to).
    drop(node);
    let node = start(&tokens, &args).await;
    let mut ops = node.manager(Some(&tokens.manage));
    let got = ops
        .get_policy(pb::PolicyName {
            name: "gold".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, gold());
    let overrides = ops
        .list_overrides(pb::ListOverridesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .overrides;
    assert_eq!(overrides.len(), 1);
    assert_eq!(overrides[0].client, "globex");
    ops.delete_policy(pb::PolicyName {
        name: "gold".into(),
    })
    .await
    .unwrap();
    let status = node
        .checker(&tokens.check)
        .check(check_request("gold", "acme"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        ops.list_overrides(pb::ListOverridesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .overrides
            .is_empty()
    );
}

#[tokio::test]
async fn two_nodes_on_one_redis_are_exact_and_share_definitions() {
    let Some(url) = redis_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let prefix = prefix();
    let args = ["--redis", url.as_str(), "--redis-prefix", prefix.as_str()];
    let a = start(&tokens, &args).await;
    let b = start(&tokens, &args).await;
    let mut policy = gold();
    policy.name = "cap".into();
    policy.limits[0].kind = Some(pb::limit::Kind::Quota(pb::Quota {
        count: 100,
        window: pb::QuotaWindow::Day as i32,
    }));
    a.manager(Some(&tokens.manage))
        .create_policy(pb::PolicyRequest {
            policy: Some(policy.clone()),
        })
        .await
        .unwrap();
    // Node b learns of it from Redis within its poll interval.
    let mut b_ops = b.manager(Some(&tokens.manage));
    let mut seen = false;
    for _ in 0..50 {
        if b_ops
            .get_policy(pb::PolicyName { name: "cap".into() })
            .await
            .is_ok()
        {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen, "node b picked up the policy created on node a");

    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let mut checker = if i % 2 == 0 {
                a.checker(&tokens.check)
            } else {
                b.checker(&tokens.check)
            };
            tokio::spawn(async move {
                checker
                    .check(check_request("cap", "acme"))
                    .await
                    .unwrap()
                    .into_inner()
                    .allowed
            })
        })
        .collect();
    let mut passed = 0;
    for t in tasks {
        if t.await.unwrap() {
            passed += 1;
        }
    }
    assert_eq!(
        passed, 100,
        "1,000 checks over two limiter nodes against a limit of 100"
    );
}

#[tokio::test]
async fn definitions_lost_by_redis_are_restored_by_a_node() {
    let Some(url) = redis_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let prefix = prefix();
    let node = start(
        &tokens,
        &["--redis", url.as_str(), "--redis-prefix", prefix.as_str()],
    )
    .await;
    let mut ops = node.manager(Some(&tokens.manage));
    ops.create_policy(pb::PolicyRequest {
        policy: Some(gold()),
    })
    .await
    .unwrap();

    // Redis forgets everything (a restart without persistence).
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:{{defs}}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();

    // Within a poll, the node writes back the catalogue it holds.
    let mut restored = false;
    for _ in 0..50 {
        let version: Option<u64> = redis::cmd("GET")
            .arg(format!("{prefix}:{{defs}}:version"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if version == Some(1) {
            restored = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(restored, "the node restored the lost definitions");
    // Changes continue from there, and a node started now sees the policy.
    let change = ops
        .set_override(pb::Override {
            policy: "gold".into(),
            client: "acme".into(),
            multiplier: 2.0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert_eq!(change.version, 2);
    let other = start(
        &tokens,
        &["--redis", url.as_str(), "--redis-prefix", prefix.as_str()],
    )
    .await;
    let got = other
        .manager(Some(&tokens.manage))
        .get_policy(pb::PolicyName {
            name: "gold".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, gold());
}
