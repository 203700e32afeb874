//! The configuration commands as a user runs them: validate, apply (with --dry-run and
//! --prune), export, and the round trip between them. Broken files change nothing.

mod support;

use std::path::Path;

use support::{cli, printed_version};

const FULL: &str = r#"
collections:
  - id: payments
    base_path: /payments
    description: Card payments
    version: "2.1"
    upstreams:
      sandbox: https://payments-sbx.internal/v1
      production: https://payments.internal/v1
    headers:
      x-api-key: "${PAYMENTS_KEY}"
    upstream_timeout: 2s
    operations:
      - id: get-charge
        methods: [GET]
        path: /charges/{id}
        target_path: /charges/{id}
        summary: Fetch a charge
        parameters:
          - { name: id, in: path, type: string, required: true }
          - { name: expand, in: query, type: boolean }
        response_schema:
          type: object
          properties:
            id: { type: string }
            amount: { type: integer, minimum: 0 }
        scopes: [charges:read]
        mcp:
          tool_name: get_charge
          read_only: true
      - id: create-charge
        methods: [POST]
        path: /charges
        request_schema: { type: object, required: [amount] }
        scopes: [charges:write]
        status: draft
      - id: files
        methods: [GET, PUT]
        path: /files/*
clients:
  - id: acme-app
    name: Acme mobile app
    partner: acme
    contact: dev@acme.example
    profiles:
      - id: acme-sbx
        environment: sandbox
        collections: [payments]
        scopes: [charges:read]
        quota_policy: partner-standard
        ip_allowlist: [10.0.0.0/8, 192.0.2.1]
        expires_at: 2027-01-01T00:00:00Z
        credentials:
          - id: acme-sbx-token
            kind: api_token
            token_hash: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
          - id: acme-sbx-oidc
            kind: oidc
            provider: acme-idp
            claims: { azp: acme-mobile }
  - id: ops-agent
    partner: internal
    active: false
identity_providers:
  - id: acme-idp
    issuer: https://idp.acme.example
    audiences: [payments-api]
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn apply_export_apply_round_trips_with_no_diff() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = write(d, "full.yaml", FULL);

    let out = cli(d, None, &["validate", "-f", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with(
            "full.yaml: valid (1 collections, 3 operations, 2 clients, 1 identity providers)\n"
        ),
        "{}",
        stdout(&out)
    );

    let out = cli(d, None, &["apply", "-f", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(printed_version(&out), 1);
    assert!(
        stdout(&out).contains("+ collection payments"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("+ operation payments/get-charge"));
    assert!(stdout(&out).contains("+ credential acme-app/acme-sbx/acme-sbx-token"));

    // Applying the same file again changes nothing and keeps the version.
    let out = cli(d, None, &["apply", "-f", &file]);
    assert!(
        stdout(&out).contains("No changes (configuration version 1)"),
        "{}",
        stdout(&out)
    );

    // Export, then apply the export: no diff, same version.
    for format in ["yaml", "json"] {
        let out = cli(d, None, &["export", "--format", format]);
        assert!(out.status.success(), "{}", stderr(&out));
        let exported = write(d, &format!("export.{format}"), &stdout(&out));
        let out = cli(d, None, &["apply", "-f", &exported, "--prune"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("Plan: 0 to create, 0 to update, 0 to delete.")
                && stdout(&out).contains("No changes (configuration version 1)"),
            "{format}: {}",
            stdout(&out)
        );
    }
    // The export holds no secret material beyond the stored hash and keeps env references.
    let export = stdout(&cli(d, None, &["export"]));
    assert!(export.contains("${PAYMENTS_KEY}"), "{export}");
    // Exporting to a file gives the same text.
    let path = d.join("out.yaml");
    let out = cli(d, None, &["export", "-o", path.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(path).unwrap(), export);
}

#[test]
fn dry_run_prints_a_diff_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = write(d, "full.yaml", FULL);
    assert!(cli(d, None, &["apply", "-f", &file]).status.success());
    let before = stdout(&cli(d, None, &["export"]));

    let changed = FULL
        .replace(
            "description: Card payments",
            "description: Card payments, now with refunds",
        )
        .replace(
            "      - id: files\n        methods: [GET, PUT]\n        path: /files/*\n",
            "",
        );
    let file2 = write(d, "changed.yaml", &changed);
    let out = cli(d, None, &["apply", "-f", &file2, "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = stdout(&out);
    assert!(plan.contains("~ collection payments"), "{plan}");
    assert!(
        plan.contains("    - description: Card payments\n"),
        "{plan}"
    );
    assert!(
        plan.contains("    + description: Card payments, now with refunds\n"),
        "{plan}"
    );
    assert!(plan.contains("- operation payments/files"), "{plan}");
    assert!(
        plan.contains("Plan: 0 to create, 1 to update, 1 to delete."),
        "{plan}"
    );
    assert!(
        plan.contains("Dry run: nothing changed (configuration version 1)"),
        "{plan}"
    );
    assert_eq!(stdout(&cli(d, None, &["export"])), before);

    let out = cli(d, None, &["apply", "-f", &file2]);
    assert_eq!(printed_version(&out), 2);
    assert!(!stdout(&cli(d, None, &["export"])).contains("id: files"));
}

#[test]
fn apply_keeps_unmentioned_objects_unless_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        cli(d, None, &["apply", "-f", &write(d, "full.yaml", FULL)])
            .status
            .success()
    );
    let other = r#"
collections:
  - id: weather
    base_path: /weather
    upstreams: { sandbox: "http://127.0.0.1:9/w" }
    operations:
      - { id: today, methods: [GET], path: /today }
"#;
    let file = write(d, "other.yaml", other);
    let out = cli(d, None, &["apply", "-f", &file]);
    assert!(
        stdout(&out).contains("Plan: 2 to create, 0 to update, 0 to delete."),
        "{}",
        stdout(&out)
    );
    let export = stdout(&cli(d, None, &["export"]));
    assert!(export.contains("id: payments") && export.contains("id: weather"));

    // A clients-only file may grant collections that only the store holds.
    let clients_only = r#"
clients:
  - id: weather-app
    profiles:
      - { id: wx-sbx, environment: sandbox, collections: [weather] }
"#;
    let out = cli(
        d,
        None,
        &["apply", "-f", &write(d, "clients.yaml", clients_only)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let export = stdout(&cli(d, None, &["export"]));
    assert!(export.contains("id: weather-app"), "{export}");
    // But not collections that exist nowhere; the path refers to the file.
    let dangling = clients_only.replace("[weather]", "[climate]");
    let out = cli(
        d,
        None,
        &["apply", "-f", &write(d, "dangling.yaml", &dangling)],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("clients[0].profiles[0].collections[0]: unknown collection 'climate'"),
        "{}",
        stderr(&out)
    );

    // Pruning deletes what the file does not mention, children included.
    let out = cli(d, None, &["apply", "-f", &file, "--prune", "--dry-run"]);
    let plan = stdout(&out);
    assert!(
        plan.contains("- collection payments") && plan.contains("- client acme-app"),
        "{plan}"
    );
    assert!(
        plan.contains("- credential acme-app/acme-sbx/acme-sbx-token"),
        "{plan}"
    );
    assert_eq!(
        stdout(&cli(d, None, &["export"])),
        export,
        "a dry run changed the store"
    );

    // A file that is valid alone but breaks what is stored is refused: the stored sandbox
    // profile is granted payments, which would lose its sandbox upstream.
    let no_sandbox = r#"
collections:
  - id: payments
    base_path: /payments
    upstreams: { production: "https://payments.internal" }
"#;
    let out = cli(
        d,
        None,
        &["apply", "-f", &write(d, "no-sbx.yaml", no_sandbox)],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("collection 'payments' has no upstream for environment 'sandbox'"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&cli(d, None, &["export"])), export);
}

#[test]
fn broken_files_are_refused_whole_with_locations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        cli(d, None, &["apply", "-f", &write(d, "full.yaml", FULL)])
            .status
            .success()
    );
    let before = stdout(&cli(d, None, &["export"]));

    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "typo.yaml",
            FULL.replace("    base_path: /payments", "    base_pth: /payments"),
            vec!["line 4", "unknown field `base_pth`"],
        ),
        (
            "syntax.yaml",
            "collections:\n  - id: x\n    base_path: [unclosed\n".to_owned(),
            vec!["line"],
        ),
        (
            "refs.yaml",
            FULL.replace(
                "collections: [payments]",
                "collections: [payments, nowhere]",
            ),
            vec![
                "clients[0].profiles[0].collections[1]",
                "unknown collection 'nowhere'",
            ],
        ),
        (
            "template.yaml",
            FULL.replace("path: /charges/{id}\n", "path: /charges/{id\n"),
            vec![
                "collections[0].operations[0].path",
                "invalid parameter name",
            ],
        ),
        (
            "conflict.yaml",
            FULL.replace("path: /files/*", "path: /charges/{charge}"),
            vec!["collections[0].operations[2].path", "conflicts"],
        ),
        (
            "many.yaml",
            FULL.replace("https://payments.internal/v1", "ftp://payments.internal")
                .replace("x-api-key", "connection")
                .replace("10.0.0.0/8", "10.0.0.0/33")
                .replace("methods: [POST]", "methods: [post]"),
            vec![
                "4 problems",
                "collections[0].upstreams.production",
                "collections[0].headers.connection",
                "collections[0].operations[1].methods[0]",
                "clients[0].profiles[0].ip_allowlist[0]",
            ],
        ),
        (
            "insecure.yaml",
            FULL.replace(
                "issuer: https://idp.acme.example",
                "issuer: http://idp.acme.example",
            )
            .replace("\"${PAYMENTS_KEY}\"", "\"${PORTCULLIS_TOKEN_SECRET}\""),
            vec![
                "identity_providers[0].issuer: 'http://idp.acme.example' must use https",
                "collections[0].headers.x-api-key: this variable holds the gateway's own secret",
            ],
        ),
        (
            "bad.json",
            r#"{"collections": [{"id": "x", "base_path": 5}]}"#.to_owned(),
            vec!["line 1", "collections[0].base_path"],
        ),
    ];
    for (name, text, wants) in cases {
        let file = write(d, name, &text);
        for cmd in ["validate", "apply"] {
            let out = cli(d, None, &[cmd, "-f", &file]);
            assert!(!out.status.success(), "{name} was accepted by {cmd}");
            let err = stderr(&out);
            for want in &wants {
                assert!(
                    err.contains(want),
                    "{name}/{cmd}: missing {want:?} in:\n{err}"
                );
            }
        }
    }
    assert_eq!(
        stdout(&cli(d, None, &["export"])),
        before,
        "a refused file changed the store"
    );
    let missing = cli(d, None, &["validate", "-f", "/nonexistent/portcullis.yaml"]);
    assert!(stderr(&missing).contains("cannot read /nonexistent/portcullis.yaml"));
}

#[test]
fn version_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(dir.path(), None, &["version"]);
    assert_eq!(
        stdout(&out).trim(),
        format!("portcullis {}", env!("CARGO_PKG_VERSION"))
    );
}
