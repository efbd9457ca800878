//! Container image references: parsing by the Docker reference grammar
//! (distribution/reference) and normalization to a fully qualified name.

use super::digest::Digest;
use super::host::{canonical_host, DOCKER_HUB};
use serde::Serialize;
use std::fmt;

const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Longest name (registry plus repository) the grammar allows.
const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;

/// Why a reference cannot be parsed. Each variant names the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the image reference is empty")]
    Empty,
    #[error("the image reference contains whitespace or control characters")]
    Whitespace,
    #[error("the repository name must be lowercase")]
    Uppercase,
    #[error("the image name is longer than {NAME_TOTAL_LENGTH_MAX} characters")]
    NameTooLong,
    #[error("invalid registry host {0:?}")]
    InvalidRegistry(String),
    #[error("invalid repository path component {0:?}")]
    InvalidPathComponent(String),
    #[error("invalid tag {0:?}: use letters, digits, '_', '.', '-' (at most 128, not starting with '.' or '-')")]
    InvalidTag(String),
    #[error("invalid digest {0:?}: expected algorithm:hex such as sha256:<64 hex digits>")]
    InvalidDigest(String),
    #[error("a repository name cannot be a 64-character hexadecimal string")]
    HexRepository,
}

/// A parsed, normalized image reference.
///
/// `registry` is canonical (see `host::canonical_host`): `docker.io` for short names and
/// every Docker Hub alias; Docker Hub official images get the `library/` prefix. `tag` is `latest` only when the reference has neither tag nor digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
    /// True when the reference named no tag and no digest and `latest` was implied.
    pub implied_latest: bool,
}

impl ImageRef {
    /// Parses a reference as written in a Pod spec.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ReferenceError::Whitespace);
        }
        // Docker refuses a bare 64-hex name: it is indistinguishable from an image ID.
        if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReferenceError::HexRepository);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((name, digest)) => (name, Some(parse_digest(digest)?)),
            None => (input, None),
        };
        // A tag follows the last ':' that is not part of a registry "host:port".
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => {
                (&rest[..i], Some(parse_tag(&rest[i + 1..])?))
            }
            _ => (rest, None),
        };
        let (registry, repository) = split_registry(name)?;
        // Docker limits the normalized name (`docker.io/library/...`), not the name as written.
        if registry.len() + 1 + repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        let implied_latest = tag.is_none() && digest.is_none();
        Ok(Self {
            registry,
            repository,
            tag: if implied_latest {
                Some("latest".to_string())
            } else {
                tag
            },
            digest,
            implied_latest,
        })
    }

    /// `registry/repository`, the name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// The normalized, fully qualified form: `registry/repository[:tag][@digest]`.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits `name` into registry and repository the way Docker does: the first
/// component is a registry only if it has a '.' or ':' or is `localhost` (in any case).
/// The registry comes back canonical.
fn split_registry(name: &str) -> Result<(String, String), ReferenceError> {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first.eq_ignore_ascii_case("localhost") =>
        {
            (canonical_host(first)?, rest)
        }
        Some((first, _)) if first.chars().any(|c| c.is_ascii_uppercase()) => {
            return Err(ReferenceError::Uppercase)
        }
        _ => (DOCKER_HUB.to_string(), name),
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ReferenceError::Uppercase);
    }
    for component in path.split('/') {
        if !is_path_component(component) {
            return Err(ReferenceError::InvalidPathComponent(component.to_string()));
        }
    }
    let repository = if registry == DOCKER_HUB && !path.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{path}")
    } else {
        path.to_string()
    };
    Ok((registry, repository))
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*` where separator is `.`, `_`, `__` or `-+`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn parse_tag(tag: &str) -> Result<String, ReferenceError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= TAG_LENGTH_MAX
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if valid {
        Ok(tag.to_string())
    } else {
        Err(ReferenceError::InvalidTag(tag.to_string()))
    }
}

fn parse_digest(digest: &str) -> Result<Digest, ReferenceError> {
    Digest::parse(digest).map_err(|e| ReferenceError::InvalidDigest(e.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:6b6f8f7a2cfa9bd8f2b8a2a4b1cb2d8fb33aa0f8c1d1fdbf5e1c3e9f30ad2c4b";

    fn ok(input: &str) -> String {
        match ImageRef::parse(input) {
            Ok(r) => r.to_string(),
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }

    #[test]
    fn normalizes_valid_references() {
        let cases = [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.27", "docker.io/library/nginx:1.27"),
            ("library/nginx", "docker.io/library/nginx:latest"),
            (
                "jmalloc/echo-server",
                "docker.io/jmalloc/echo-server:latest",
            ),
            (
                "index.docker.io/library/busybox:1",
                "docker.io/library/busybox:1",
            ),
            ("docker.io/nginx", "docker.io/library/nginx:latest"),
            ("ghcr.io/org/team/app:v1.2.3", "ghcr.io/org/team/app:v1.2.3"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app:dev", "localhost:5000/app:dev"),
            ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b:c"),
            ("[::1]:5000/app:1", "[::1]:5000/app:1"),
            ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
            (
                "my-registry.local:5000/team/app",
                "my-registry.local:5000/team/app:latest",
            ),
            (
                "a__b/c.d_e--f:Tag_1.0-x",
                "docker.io/a__b/c.d_e--f:Tag_1.0-x",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(ok(input), want, "input {input:?}");
        }
    }

    #[test]
    fn keeps_digests_and_tag_plus_digest() {
        assert_eq!(
            ok(&format!("nginx@{D}")),
            format!("docker.io/library/nginx@{D}")
        );
        assert_eq!(
            ok(&format!("nginx:1.27@{D}")),
            format!("docker.io/library/nginx:1.27@{D}")
        );
        assert_eq!(
            ok(&format!("localhost:5000/app@{D}")),
            format!("localhost:5000/app@{D}")
        );
        let r = ImageRef::parse(&format!("nginx@{D}")).expect("parses");
        assert_eq!(r.tag, None);
        assert!(!r.implied_latest);
        assert_eq!(r.digest.as_deref(), Some(D));
    }

    /// Found by `make fuzz` (target `registry_host`): dropping `:443` from a one-label host
    /// made `JoO:443/a/b` print as `joo/a/b`, which reads as Docker Hub's `docker.io/joo/a/b`.
    #[test]
    fn a_one_label_host_keeps_its_port_so_it_stays_a_registry() {
        let parsed = ImageRef::parse("JoO:443/a/b").expect("parses");
        assert_eq!(parsed.registry, "joo:443");
        assert_eq!(parsed.to_string(), "joo:443/a/b:latest");
        assert_eq!(
            ImageRef::parse(&parsed.to_string()),
            Ok(ImageRef {
                implied_latest: false,
                ..parsed
            })
        );
    }

    /// Found by `make fuzz` (target `reference`): short enough as written, too long once
    /// `docker.io/` is added, so the normalized form did not parse again.
    #[test]
    fn limits_the_normalized_name_length_so_normal_forms_reparse() {
        let input = format!("a__b/c.c-{}", "9".repeat(240));
        assert_eq!(ImageRef::parse(&input), Err(ReferenceError::NameTooLong));
        let fits = format!(
            "a/{}",
            "b".repeat(NAME_TOTAL_LENGTH_MAX - "docker.io/a/".len())
        );
        let parsed = ImageRef::parse(&fits).expect("fits exactly");
        let again = ImageRef::parse(&parsed.to_string()).expect("the normal form parses");
        assert_eq!(again.to_string(), parsed.to_string());
    }

    /// A tiny deterministic generator, so the property below needs no extra crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A spelling a runtime pulls from the same registry as `host`: letters in any case, an
    /// explicit `:443` (with leading zeros), another name of Docker Hub.
    fn respell(host: &str, rng: &mut XorShift) -> String {
        let aliases = [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "registry.hub.docker.com",
        ];
        let base = if host == "docker.io" {
            aliases[rng.below(aliases.len())].to_string()
        } else {
            host.to_string()
        };
        let (name, port) = match base.rsplit_once(':') {
            Some((n, p)) if !base.ends_with(']') => (n.to_string(), Some(p.to_string())),
            _ => (base, None),
        };
        let mut out: String = name
            .chars()
            .map(|c| {
                if rng.below(2) == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        match port {
            Some(p) => out.push_str(&format!(":{}{p}", "0".repeat(rng.below(3)))),
            None if rng.below(2) == 0 => out.push_str(&format!(":{}443", "0".repeat(rng.below(2)))),
            None => {}
        }
        out
    }

    #[test]
    fn every_spelling_of_a_registry_gets_one_canonical_host_and_normal_forms_are_fixed_points() {
        let bases = [
            "docker.io/library/nginx:1.27",
            "docker.io/acme/app",
            "ghcr.io/acme/team/app:v1",
            "localhost/app:dev",
            "localhost:5000/app",
            "registry.example.com:8443/a/b@sha256:6b6f8f7a2cfa9bd8f2b8a2a4b1cb2d8fb33aa0f8c1d1fdbf5e1c3e9f30ad2c4b",
            "[::1]:5000/app:1",
            "127.0.0.1:5000/x/y:z",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for base in bases {
            let want = ImageRef::parse(base).expect("base parses");
            let (host, rest) = base.split_once('/').expect("has a host");
            for _ in 0..200 {
                let spelling = format!("{}/{rest}", respell(host, &mut rng));
                let got = ImageRef::parse(&spelling)
                    .unwrap_or_else(|e| panic!("{spelling:?} should parse: {e}"));
                assert_eq!(got.registry, want.registry, "{spelling:?}");
                assert_eq!(got.to_string(), want.to_string(), "{spelling:?}");
                let again = ImageRef::parse(&got.to_string()).expect("the normal form parses");
                assert_eq!(
                    (&again.registry, again.to_string()),
                    (&got.registry, got.to_string()),
                    "{spelling:?}: canonicalizing twice changes nothing"
                );
            }
        }
    }

    #[test]
    fn marks_implied_latest() {
        let r = ImageRef::parse("nginx").expect("parses");
        assert!(r.implied_latest);
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = ImageRef::parse("nginx:latest").expect("parses");
        assert!(!r.implied_latest);
    }

    #[test]
    fn rejects_invalid_references() {
        let long = format!("a/{}", "b".repeat(300));
        let hex64 = "a".repeat(64);
        let cases: Vec<(&str, ReferenceError)> = vec![
            ("", ReferenceError::Empty),
            ("nginx latest", ReferenceError::Whitespace),
            ("nginx\n", ReferenceError::Whitespace),
            ("Nginx", ReferenceError::Uppercase),
            ("docker.io/Library/nginx", ReferenceError::Uppercase),
            ("Org/app", ReferenceError::Uppercase),
            ("nginx:", ReferenceError::InvalidTag(String::new())),
            ("nginx:-bad", ReferenceError::InvalidTag("-bad".into())),
            ("nginx:.bad", ReferenceError::InvalidTag(".bad".into())),
            (
                "nginx:a/b",
                ReferenceError::InvalidRegistry("nginx:a".into()),
            ),
            (
                "nginx@sha256:abc",
                ReferenceError::InvalidDigest("sha256:abc".into()),
            ),
            ("nginx@md5", ReferenceError::InvalidDigest("md5".into())),
            ("nginx@", ReferenceError::InvalidDigest(String::new())),
            (
                "/nginx",
                ReferenceError::InvalidPathComponent(String::new()),
            ),
            (
                "nginx/",
                ReferenceError::InvalidPathComponent(String::new()),
            ),
            ("a//b", ReferenceError::InvalidPathComponent(String::new())),
            ("-app", ReferenceError::InvalidPathComponent("-app".into())),
            ("app_", ReferenceError::InvalidPathComponent("app_".into())),
            (
                "a___b",
                ReferenceError::InvalidPathComponent("a___b".into()),
            ),
            ("a.-b", ReferenceError::InvalidPathComponent("a.-b".into())),
            (
                "host:port/app",
                ReferenceError::InvalidRegistry("host:port".into()),
            ),
            (
                "-bad.io/app",
                ReferenceError::InvalidRegistry("-bad.io".into()),
            ),
            (
                "[zz]:5000/app",
                ReferenceError::InvalidRegistry("[zz]:5000".into()),
            ),
            (long.as_str(), ReferenceError::NameTooLong),
            (hex64.as_str(), ReferenceError::HexRepository),
        ];
        for (input, want) in cases {
            assert_eq!(ImageRef::parse(input), Err(want), "input {input:?}");
        }
        let tag = format!("nginx:{}", "t".repeat(129));
        assert!(matches!(
            ImageRef::parse(&tag),
            Err(ReferenceError::InvalidTag(_))
        ));
        let upper_digest = format!("nginx@sha256:{}", "A".repeat(64));
        assert!(matches!(
            ImageRef::parse(&upper_digest),
            Err(ReferenceError::InvalidDigest(_))
        ));
    }
}
