//! A content digest, `algorithm:hex`, as the OCI image spec defines it: checked once where
//! it enters (a reference, a registry's answer, an index entry), then carried as a
//! `Digest` rather than a string, so no function has to guess whether a `&str` holds one.

use serde::Serialize;

/// A well-formed content digest: a known algorithm with its exact length of lowercase hex
/// (`sha256`, `sha384`, `sha512`), or another OCI algorithm name with at least 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Digest(String);

/// Text that is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {0:?}: expected algorithm:hex such as sha256:<64 hex digits>")]
pub struct InvalidDigest(pub String);

impl Digest {
    /// Reads `algorithm:hex`; known algorithms must have their exact hex length.
    pub fn parse(text: &str) -> Result<Self, InvalidDigest> {
        let invalid = || InvalidDigest(text.to_string());
        let (algorithm, hex) = text.split_once(':').ok_or_else(invalid)?;
        let algorithm_ok = !algorithm.is_empty()
            && algorithm.split(['+', '.', '-', '_']).all(|c| {
                c.starts_with(|ch: char| ch.is_ascii_alphabetic())
                    && c.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        let expected_len = match algorithm {
            "sha256" => Some(64),
            "sha384" => Some(96),
            "sha512" => Some(128),
            _ => None,
        };
        let hex_ok = match expected_len {
            Some(n) => hex.len() == n && hex.bytes().all(is_lower_hex),
            None => hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        };
        if algorithm_ok && hex_ok {
            Ok(Self(text.to_string()))
        } else {
            Err(invalid())
        }
    }

    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        let hash = ring::digest::digest(&ring::digest::SHA256, bytes);
        Self(format!("sha256:{}", hex::encode(hash)))
    }

    /// Whether this is the digest of `bytes` (`sha256` and `sha512` are computed; any other
    /// algorithm is never taken on trust).
    pub fn is_digest_of(&self, bytes: &[u8]) -> bool {
        let algorithm = match self.algorithm() {
            "sha256" => &ring::digest::SHA256,
            "sha512" => &ring::digest::SHA512,
            _ => return false,
        };
        self.hex() == hex::encode(ring::digest::digest(algorithm, bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(a, _)| a)
    }

    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }

    /// Whether this is a SHA-256 digest.
    pub fn is_sha256(&self) -> bool {
        self.algorithm() == "sha256"
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

impl std::ops::Deref for Digest {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_digests_as_oci_defines_them() {
        let hex = "a".repeat(64);
        for good in [
            format!("sha256:{hex}"),
            format!("sha512:{}", "0".repeat(128)),
            format!("multihash+base58:{}", "F".repeat(32)),
        ] {
            assert_eq!(Digest::parse(&good).map(|d| d.to_string()), Ok(good));
        }
        for bad in [
            String::new(),
            hex.clone(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{hex}\n"),
            format!(":{hex}"),
            format!("1sha:{hex}"),
        ] {
            assert_eq!(Digest::parse(&bad), Err(InvalidDigest(bad.clone())));
        }
    }

    #[test]
    fn knows_the_digest_of_bytes() {
        let digest = Digest::sha256_of(b"hello");
        assert!(digest.is_sha256());
        assert!(digest.is_digest_of(b"hello"));
        assert!(!digest.is_digest_of(b"hello "));
        let other = Digest::parse(&format!("sha384:{}", "a".repeat(96))).expect("valid");
        assert!(!other.is_digest_of(b"hello"));
    }
}
