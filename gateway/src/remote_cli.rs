//! `apply`, `export` and `credential` against a running gateway: with `--server`, the CLI
//! calls the management API under an operator token (`PORTCULLIS_OPERATOR_TOKEN`) instead of
//! opening the store, so it acts under that operator's roles and every change it makes is a
//! change record with channel `cli`.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::model::Config;

/// A management API and the operator token to call it with.
pub struct Remote {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Remote {
    /// `server`: the admin listener's URL, e.g. `http://127.0.0.1:8081`.
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        let token = token
            .filter(|t| !t.trim().is_empty())
            .context("--server needs an operator token in PORTCULLIS_OPERATOR_TOKEN")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("portcullis-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            base: server.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
            http,
        })
    }

    /// One call; the answer's JSON, or the API's error as the error.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-portcullis-channel", "cli");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the management API at {}", self.base))?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status >= 400 {
            let code = value["error"]["code"].as_str().unwrap_or("error");
            let message = value["error"]["message"].as_str().unwrap_or(&text);
            bail!("{path}: {status} {code}: {message}");
        }
        Ok((status, value))
    }

    /// Applies each object of `config` with `PUT` (identity providers, then collections, then
    /// clients, so references resolve). Each object is its own configuration version.
    pub async fn apply(&self, config: &Config, dry_run: bool) -> anyhow::Result<()> {
        let query = if dry_run { "?dry_run=true" } else { "" };
        let mut objects: Vec<(&str, String, Value)> = Vec::new();
        for p in &config.identity_providers {
            objects.push(("identity_providers", p.id.to_string(), json!(p)));
        }
        for c in &config.collections {
            objects.push(("collections", c.id.to_string(), json!(c)));
        }
        for c in &config.clients {
            objects.push(("clients", c.id.to_string(), json!(c)));
        }
        for (kind, id, body) in objects {
            let path = format!("/{kind}/{}{query}", encode(&id));
            let (status, answer) = self.call(reqwest::Method::PUT, &path, Some(&body)).await?;
            let what = if dry_run {
                let change = &answer["change"];
                if change["before"] == change["after"] {
                    "unchanged (dry run)"
                } else if change["before"].is_null() {
                    "would be created"
                } else {
                    "would be updated"
                }
            } else if status == 201 {
                "created"
            } else {
                "applied"
            };
            println!("{kind}/{id}: {what}");
        }
        Ok(())
    }

    /// Every stored object, as `GET` shows them (credential material redacted), one page at a
    /// time.
    pub async fn export(&self) -> anyhow::Result<Config> {
        let mut config = Value::Object(Default::default());
        for kind in ["collections", "clients", "identity_providers"] {
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("/{kind}?limit=1000&cursor={}", encode(c)),
                    None => format!("/{kind}?limit=1000"),
                };
                let (_, page) = self.call(reqwest::Method::GET, &path, None).await?;
                items.extend(page[kind].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
            if !items.is_empty() {
                config[kind] = Value::Array(items);
            }
        }
        serde_json::from_value(config).context("the management API answered an unexpected shape")
    }

    /// Issues (no `old`) or rotates a profile's token; prints it once.
    pub async fn issue(
        &self,
        client: &str,
        profile: &str,
        options: Value,
        old: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut path = format!(
            "/clients/{}/profiles/{}/credentials",
            encode(client),
            encode(profile)
        );
        if let Some(old) = old {
            path.push_str(&format!("/{}/rotate", encode(old)));
        }
        let (_, issued) = self
            .call(reqwest::Method::POST, &path, Some(&options))
            .await?;
        println!(
            "Issued credential {}.",
            issued["credential"].as_str().unwrap_or("")
        );
        if let Some(t) = issued["expires_at"].as_str() {
            println!("Expires: {t}");
        }
        println!("Token (shown once; store it now):");
        println!("{}", issued["token"].as_str().unwrap_or(""));
        println!("(configuration version {})", issued["config_version"]);
        Ok(())
    }

    /// Revokes a credential.
    pub async fn revoke(&self, client: &str, profile: &str, id: &str) -> anyhow::Result<()> {
        let path = format!(
            "/clients/{}/profiles/{}/credentials/{}",
            encode(client),
            encode(profile),
            encode(id)
        );
        let (_, answer) = self.call(reqwest::Method::DELETE, &path, None).await?;
        println!(
            "Revoked {id} (configuration version {}).",
            answer["config_version"]
        );
        Ok(())
    }
}

/// One path segment, percent-encoded.
fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}
