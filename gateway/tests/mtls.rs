//! Client certificates through the real binary's TLS listener: a certificate chaining to a
//! profile's CA, a certificate pinned by fingerprint, and certificates that prove nothing.

mod support;

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use sha2::Digest;
use support::{Node, Upstream, code};

/// A certificate and its key as one PEM bundle (what a client presents).
struct Identity {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Identity {
    fn reqwest(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.cert_pem, self.key_pem).as_bytes())
            .unwrap()
    }

    fn fingerprint(&self) -> String {
        sha2::Sha256::digest(&self.der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

fn client_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

fn self_signed(name: &str) -> Identity {
    let key = KeyPair::generate().unwrap();
    let cert = client_params(name).self_signed(&key).unwrap();
    Identity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

fn config(up: &str, ca_pem: &str, pinned_fingerprint: &str) -> String {
    let ca: String = ca_pem
        .lines()
        .map(|l| format!("              {l}\n"))
        .collect();
    format!(
        r#"
collections:
  - id: telemetry
    base_path: /telemetry
    upstreams: {{ sandbox: "{up}/sbx" }}
    operations:
      - {{ id: push, methods: [GET, POST], path: / }}
clients:
  - id: device-fleet
    profiles:
      - id: fleet-sbx
        environment: sandbox
        collections: [telemetry]
        credentials:
          - id: fleet-ca
            kind: mtls
            ca_pem: |
{ca}  - id: kiosk
    profiles:
      - id: kiosk-sbx
        environment: sandbox
        collections: [telemetry]
        credentials:
          - {{ id: kiosk-cert, kind: mtls, fingerprint_sha256: "{pinned_fingerprint}" }}
"#
    )
}

#[tokio::test]
async fn certificates_identify_profiles() {
    let up = Upstream::start().await;
    // A CA, a device certificate it signed, a pinned self-signed certificate, and a stranger.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(vec!["fleet-ca".to_owned()]).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let device_key = KeyPair::generate().unwrap();
    let device_cert = client_params("device-17")
        .signed_by(&device_key, &ca)
        .unwrap();
    let device = Identity {
        cert_pem: device_cert.pem(),
        key_pem: device_key.serialize_pem(),
        der: device_cert.der().to_vec(),
    };
    let kiosk = self_signed("kiosk-3");
    let stranger = self_signed("stranger");

    let dir = tempfile::tempdir().unwrap();
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, server.cert.pem()).unwrap();
    std::fs::write(&key_path, server.signing_key.serialize_pem()).unwrap();
    let node = Node::builder()
        .config(&config(&up.url(), &ca.pem(), &kiosk.fingerprint()))
        .without_tester()
        .arg("--tls-cert")
        .arg(cert_path.to_str().unwrap())
        .arg("--tls-key")
        .arg(key_path.to_str().unwrap())
        .start();
    let url = format!(
        "{}/telemetry",
        node.gateway.replace("127.0.0.1", "localhost")
    );
    let root = reqwest::Certificate::from_pem(server.cert.pem().as_bytes()).unwrap();
    let client = |identity: Option<&Identity>| {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(root.clone())
            .timeout(Duration::from_secs(10));
        if let Some(i) = identity {
            b = b.identity(i.reqwest());
        }
        b.build().unwrap()
    };

    let r = client(Some(&device)).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        up.last().header("x-portcullis-client"),
        Some("device-fleet")
    );
    assert_eq!(
        up.last().header("x-portcullis-credential"),
        Some("fleet-ca")
    );

    let r = client(Some(&kiosk)).post(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-portcullis-client"), Some("kiosk"));
    let seen = up.seen().len();

    // A certificate that neither chains to a configured CA nor is pinned proves nothing.
    let r = client(Some(&stranger)).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(code(&r.text().await.unwrap()), "invalid_credential");
    // No certificate, and a certificate pasted into a header, are not credentials.
    let r = client(None)
        .get(&url)
        .header("x-client-cert", kiosk.cert_pem.replace('\n', ""))
        .header("x-ssl-client-cert", kiosk.cert_pem.replace('\n', ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(code(&r.text().await.unwrap()), "unauthenticated");
    assert_eq!(
        up.seen().len(),
        seen,
        "a refused caller reached the upstream"
    );
}

#[tokio::test]
async fn a_certificate_forwarded_by_a_trusted_proxy() {
    let up = Upstream::start().await;
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(vec!["fleet-ca".to_owned()]).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let kiosk = self_signed("kiosk-3");
    let escaped: String =
        percent_encoding::utf8_percent_encode(&kiosk.cert_pem, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let yaml = config(&up.url(), &ca.pem(), &kiosk.fingerprint());

    // Enabled, and the proxy (this test, on 127.0.0.1) is trusted: the header identifies.
    let trusting = Node::builder()
        .config(&yaml)
        .without_tester()
        .arg("--trusted-proxies")
        .arg("127.0.0.1")
        .arg("--client-cert-header")
        .arg("x-client-cert")
        .start();
    let r = reqwest::Client::new()
        .get(format!("{}/telemetry", trusting.gateway))
        .header("x-client-cert", &escaped)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-portcullis-client"), Some("kiosk"));
    assert!(
        up.last().header("x-client-cert").is_none(),
        "the proxy's header went upstream"
    );

    // Enabled, but the peer is not a trusted proxy: the header is ignored.
    let untrusting = Node::builder()
        .config(&yaml)
        .without_tester()
        .arg("--client-cert-header")
        .arg("x-client-cert")
        .start();
    let r = reqwest::Client::new()
        .get(format!("{}/telemetry", untrusting.gateway))
        .header("x-client-cert", &escaped)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(code(&r.text().await.unwrap()), "unauthenticated");
}
