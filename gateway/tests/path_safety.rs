//! Path tricks sent as raw bytes (a URL library would tidy them first): none reaches an
//! operation it should not, and none escapes the target path upstream.

mod support;

use support::{Node, Upstream, code, raw_request};

fn config(up: &str) -> String {
    format!(
        r#"
collections:
  - id: public
    base_path: /public
    upstreams: {{ sandbox: "{up}/public-api" }}
    operations:
      - {{ id: files, methods: [GET], path: "/files/*", target_path: "/static/*" }}
      - {{ id: item, methods: [GET], path: "/items/{{id}}", target_path: "/items/{{id}}/view" }}
  - id: admin
    base_path: /admin
    status: draft
    upstreams: {{ sandbox: "{up}/admin-api" }}
    operations:
      - {{ id: secrets, methods: [GET], path: /secrets }}
"#
    )
}

#[tokio::test]
async fn traversal_and_encoding_tricks_are_refused() {
    let up = Upstream::start().await;
    let node = Node::with_config(&config(&up.url()));
    let refused = [
        "/public/files/../../admin/secrets",
        "/public/files/%2e%2e/%2e%2e/admin/secrets",
        "/public/files/%2E%2E/secret",
        "/public/files/.%2e/secret",
        "/public/files/./x",
        "/public/files/..%2fadmin",
        "/public/files/a%2f..%2f..%2fadmin",
        "/public/items/..%2F..%2Fadmin%2Fsecrets",
        "/public/items/%2e%2e",
        "/public/files/a%5c..%5csecret",
        "/public/files/a\\..\\secret",
        "/public/files/a%00b",
        "/public/files/%zz",
        "/public/files/%c0%ae%c0%ae/secret",
        "/public/files/..;/admin/secrets",
        "/public/files/..%3B/admin/secrets",
    ];
    for path in refused {
        let (status, body) = raw_request(&node, path, "GET").await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(code(&body), "bad_request", "{path}");
    }
    assert!(up.seen().is_empty(), "reached upstream: {:?}", up.seen());
}

#[tokio::test]
async fn values_stay_inside_their_segment() {
    let up = Upstream::start().await;
    let node = Node::with_config(&config(&up.url()));
    let cases = [
        // Duplicate slashes collapse before routing.
        ("/public//files///a//b", "/public-api/static/a/b"),
        ("//public/items/7", "/public-api/items/7/view"),
        // Encoded characters are decoded for matching and re-encoded upstream.
        ("/public/items/a%20b", "/public-api/items/a%20b/view"),
        (
            "/public/items/%3Fx=1%23frag",
            "/public-api/items/%3Fx=1%23frag/view",
        ),
        (
            "/public/items/caf%C3%A9",
            "/public-api/items/caf%C3%A9/view",
        ),
        (
            "/public/files/a%25b/%7Euser",
            "/public-api/static/a%25b/~user",
        ),
        // Dots that are not whole segments are ordinary characters.
        (
            "/public/files/..hidden/x..",
            "/public-api/static/..hidden/x..",
        ),
        // A trailing slash is kept through a wildcard.
        ("/public/files/dir/", "/public-api/static/dir/"),
        ("/public/files/", "/public-api/static/"),
        // Path parameters (`;`) are data: encoded upstream, never a separator.
        ("/public/items/a;b", "/public-api/items/a%3Bb/view"),
        // The query is passed through as sent.
        (
            "/public/items/1?next=../../admin&x=%2F",
            "/public-api/items/1/view?next=../../admin&x=%2F",
        ),
    ];
    for (path, want) in cases {
        let (status, body) = raw_request(&node, path, "GET").await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(up.last().target, want, "{path}");
    }
    // The draft collection is unreachable by any spelling.
    for path in [
        "/admin/secrets",
        "/Admin/secrets",
        "/%61dmin/secrets",
        "//admin//secrets",
    ] {
        let (status, body) = raw_request(&node, path, "GET").await;
        assert_eq!(
            (status, code(&body).as_str()),
            (404, "route_not_found"),
            "{path}"
        );
    }
    assert!(
        up.seen()
            .iter()
            .all(|s| s.target.starts_with("/public-api/"))
    );
}

#[tokio::test]
async fn non_origin_form_targets_are_refused() {
    let up = Upstream::start().await;
    let node = Node::with_config(&config(&up.url()));
    let (status, body) = raw_request(&node, "*", "OPTIONS").await;
    assert_eq!((status, code(&body).as_str()), (400, "bad_request"));
    assert!(up.seen().is_empty());
}
