//! API tokens: their format (a recognisable prefix, 190 bits of randomness and a checksum, so
//! secret scanners can spot a leaked one and garbage is refused without a lookup), and the
//! keyed hash under which they are stored. The token itself is shown once and never kept.

use std::path::Path;

use hmac::{KeyInit, Mac};
use rand::RngExt;
use subtle::ConstantTimeEq;

/// Every Portcullis API token starts with this.
pub const PREFIX: &str = "pcl_";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
/// Total length of a token.
pub const TOKEN_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new token, to be shown to its owner once.
pub fn generate() -> String {
    generate_with(PREFIX)
}

/// Every operator (management API) token starts with this.
pub const OPERATOR_PREFIX: &str = "pco_";

/// A new token with `prefix`: the same shape and checksum as API tokens.
pub fn generate_with(prefix: &str) -> String {
    let random: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(RANDOM_LEN)
        .map(char::from)
        .collect();
    let checksum = base62(crc32fast::hash(random.as_bytes()));
    format!("{prefix}{random}{checksum}")
}

/// Whether `text` has a token's shape and a correct checksum.
pub fn is_well_formed(text: &str) -> bool {
    is_well_formed_with(text, PREFIX)
}

/// Whether `text` is a token with `prefix` and a correct checksum.
pub fn is_well_formed_with(text: &str, prefix: &str) -> bool {
    let Some(body) = text.strip_prefix(prefix) else {
        return false;
    };
    if body.len() != RANDOM_LEN + CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, checksum) = body.split_at(RANDOM_LEN);
    base62(crc32fast::hash(random.as_bytes())) == checksum
}

fn base62(mut n: u32) -> String {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

/// The server secret that keys token hashes. Every node of a cluster needs the same one.
#[derive(Clone)]
pub struct TokenSecret(Vec<u8>);

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// Why the secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the token secret must be at least 32 bytes")]
    TooShort,
    #[error("cannot read or create the token secret file {path}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

impl TokenSecret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = bytes.into();
        if bytes.len() < 32 {
            return Err(SecretError::TooShort);
        }
        Ok(Self(bytes))
    }

    /// The secret from `value` (e.g. `PORTCULLIS_TOKEN_SECRET`) when given, otherwise from
    /// `DATA_DIR/token-secret`, created with 256 random bits (mode 0600) on first use — so the
    /// embedded default needs no setup and the CLI and the node on one machine agree.
    pub fn load(value: Option<&str>, data_dir: &Path) -> Result<Self, SecretError> {
        if let Some(v) = value {
            return Self::new(v.as_bytes());
        }
        let path = data_dir.join("token-secret");
        let file_err = |source| SecretError::File {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::new(text.trim().as_bytes()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(file_err)?;
                let mut bytes = [0u8; 32];
                rand::rng().fill(&mut bytes);
                write_private(&path, &hex::encode(bytes)).map_err(file_err)?;
                // Another process may have won the race to create it: read what is there.
                let text = std::fs::read_to_string(&path).map_err(file_err)?;
                Self::new(text.trim().as_bytes())
            }
            Err(e) => Err(file_err(e)),
        }
    }

    /// The stored form of a token: hex HMAC-SHA-256 under this secret.
    pub fn hash(&self, token: &str) -> [u8; 32] {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The hex form stored in the configuration.
    pub fn hash_hex(&self, token: &str) -> String {
        hex::encode(self.hash(token))
    }
}

/// Compares two hashes in constant time.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// Parses a stored hex hash.
pub fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Creates `path` with owner-only permissions; leaves an existing file alone.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut f) => f.write_all(text.as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(a.starts_with("pcl_"));
        assert!(is_well_formed(&a) && is_well_formed(&b));
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let t = generate();
        let mut bytes = t.clone().into_bytes();
        bytes[10] = if bytes[10] == b'a' { b'b' } else { b'a' };
        assert!(!is_well_formed(&String::from_utf8(bytes).unwrap()));
        for bad in [
            "",
            "pcl_",
            "Bearer x",
            &t[..t.len() - 1],
            &format!("{t}x"),
            &t.replace("pcl_", "pcx_"),
        ] {
            assert!(!is_well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn hashes_are_keyed() {
        let s1 = TokenSecret::new(vec![1u8; 32]).unwrap();
        let s2 = TokenSecret::new(vec![2u8; 32]).unwrap();
        assert_ne!(s1.hash("pcl_x"), s2.hash("pcl_x"));
        assert_eq!(parse_hash(&s1.hash_hex("pcl_x")), Some(s1.hash("pcl_x")));
        assert!(TokenSecret::new(vec![0u8; 31]).is_err());
        assert_eq!(format!("{s1:?}"), "TokenSecret(<redacted>)");
    }

    #[test]
    fn the_secret_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = TokenSecret::load(None, dir.path()).unwrap();
        let b = TokenSecret::load(None, dir.path()).unwrap();
        assert_eq!(a.hash("t"), b.hash("t"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("token-secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let explicit = TokenSecret::load(Some(&"k".repeat(40)), dir.path()).unwrap();
        assert_ne!(explicit.hash("t"), a.hash("t"));
    }
}
