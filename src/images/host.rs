//! Registry hosts in one canonical spelling. A container runtime pulls `GHCR.IO/acme/app`,
//! `ghcr.io:443/acme/app` and `ghcr.io/acme/app` from the same registry, and
//! `index.docker.io/...` from Docker Hub; everything that keys on a registry (image-policy
//! globs, mirrors, credentials, caches, `input.images[*].registry`) sees the one form made
//! here, so no spelling slips past a policy written for another. Owns validating and
//! canonicalizing `host[:port]`; not the rest of a reference.

use super::ReferenceError;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Docker Hub's name: what short names such as `nginx` resolve to.
pub const DOCKER_HUB: &str = "docker.io";
/// Other names a runtime reaches Docker Hub by.
const DOCKER_HUB_ALIASES: [&str; 3] = [
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];
/// The port of HTTPS, the scheme runtimes use for a registry unless configured otherwise.
/// `:80` is kept: a runtime speaks HTTPS to `host:80`, which is not where `host` is.
const HTTPS_PORT: u16 = 443;

/// The canonical form of a registry `host[:port]`: the host lower-cased, an IP address in
/// its standard text (IPv4-mapped IPv6 and the numeric forms a resolver reads as IPv4
/// folded into dotted IPv4), `:443` and leading zeros of a port dropped (`:443` is kept on
/// a one-label name other than `localhost`, which without a port would read as a Docker
/// Hub namespace), Docker Hub's aliases folded into `docker.io`. Canonicalizing a canonical
/// host gives it back.
pub fn canonical_host(registry: &str) -> Result<String, ReferenceError> {
    let invalid = || ReferenceError::InvalidRegistry(registry.to_string());
    let (host, port) = split_port(registry).ok_or_else(invalid)?;
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            // Go reads `:005000` as port 5000, however many zeros lead.
            match p.trim_start_matches('0').parse::<u16>() {
                Ok(0) | Err(_) => return Err(invalid()),
                Ok(n) => Some(n),
            }
        }
        Some(_) => return Err(invalid()),
    };
    let host = canonical_name(host).ok_or_else(invalid)?;
    // `:443` goes, unless the host would then no longer read as a registry: `name/app` is
    // Docker Hub's `docker.io/name/app`, while `name:443/app` is the registry `name`.
    let reads_as_registry = host.contains(['.', ':']) || host == "localhost";
    let port = port.filter(|p| *p != HTTPS_PORT || !reads_as_registry);
    let host = if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        DOCKER_HUB.to_string()
    } else {
        host
    };
    Ok(match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// `(host, port)`; a bracketed IPv6 host keeps its brackets.
fn split_port(registry: &str) -> Option<(&str, Option<&str>)> {
    if registry.starts_with('[') {
        let end = registry.find(']')?;
        let (host, after) = registry.split_at(end + 1);
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    Some(match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    })
}

/// A DNS name lower-cased, or an IP address in its standard text.
fn canonical_name(host: &str) -> Option<String> {
    if let Some(inner) = host.strip_prefix('[') {
        let ip: Ipv6Addr = inner.strip_suffix(']')?.parse().ok()?;
        return Some(match ip.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{ip}]"),
        });
    }
    let labels_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !labels_ok {
        return None;
    }
    let host = host.to_ascii_lowercase();
    Some(match numeric_ipv4(&host) {
        Some(ip) => ip.to_string(),
        None => host,
    })
}

/// An IPv4 address as `inet_aton` (and so glibc's resolver, which runtimes may use) reads
/// it: one to four parts, each decimal, octal (`0` prefix) or hex (`0x` prefix), the last
/// filling the remaining bytes. `0x7f.1` and `2130706433` are `127.0.0.1`.
fn numeric_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) = if let Some(hex) = part.strip_prefix("0x") {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (*part, 10)
        };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        let value = if digits.is_empty() {
            0
        } else {
            u32::from_str_radix(digits, radix).ok()?
        };
        values.push(value);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|&v| v > 0xff) {
        return None;
    }
    let free_bits = 8 * (4 - leading.len() as u32);
    if free_bits < 32 && *last >> free_bits != 0 {
        return None;
    }
    let high = leading
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, &v)| acc | (v << (24 - 8 * i as u32)));
    Some(Ipv4Addr::from(high | last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_every_spelling_of_one_registry() {
        let cases: &[(&[&str], &str)] = &[
            (
                &[
                    "ghcr.io",
                    "GHCR.IO",
                    "Ghcr.Io",
                    "ghcr.io:443",
                    "GHCR.io:0443",
                ],
                "ghcr.io",
            ),
            (
                &[
                    "docker.io",
                    "DOCKER.IO",
                    "docker.io:443",
                    "index.docker.io",
                    "Index.Docker.IO:443",
                    "registry-1.docker.io",
                    "registry.hub.docker.com",
                ],
                "docker.io",
            ),
            (&["localhost", "LOCALHOST", "localhost:443"], "localhost"),
            (
                &[
                    "registry.local:5000",
                    "Registry.Local:05000",
                    "registry.local:0000005000",
                ],
                "registry.local:5000",
            ),
            (
                &[
                    "127.0.0.1:5000",
                    "[::ffff:127.0.0.1]:5000",
                    "[::FFFF:7f00:1]:5000",
                    "0x7f.0.0.1:5000",
                    "0177.0.0.1:5000",
                    "127.1:5000",
                    "2130706433:5000",
                ],
                "127.0.0.1:5000",
            ),
            (
                &["[::1]:5000", "[0:0::1]:5000", "[0::0:1]:5000"],
                "[::1]:5000",
            ),
            (&["[2001:DB8::1]", "[2001:db8:0::1]:443"], "[2001:db8::1]"),
        ];
        for (spellings, want) in cases {
            for spelling in *spellings {
                assert_eq!(
                    canonical_host(spelling).as_deref(),
                    Ok(*want),
                    "{spelling:?}"
                );
                assert_eq!(canonical_host(want).as_deref(), Ok(*want), "{want:?}");
            }
        }
    }

    #[test]
    fn keeps_what_is_another_endpoint() {
        for host in [
            // Found by `make fuzz` (registry_host): `joo:443/x` is the registry `joo`;
            // `joo/x` would be Docker Hub's `docker.io/joo/x`.
            "joo:443",
            "ghcr.io:80",
            "ghcr.io:8443",
            "docker.io:5000",
            "my-docker.io",
            "999.1.1.1",
        ] {
            assert_eq!(canonical_host(host).as_deref(), Ok(host), "{host:?}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_host() {
        for host in [
            "",
            "ghcr.io:",
            "ghcr.io:0",
            "ghcr.io:65536",
            "ghcr.io:443:443",
            "ghcr.io.",
            "-ghcr.io",
            "gh_cr.io",
            "[zz]",
            "[::1",
            "[::1]x",
            "[fe80::1%eth0]:5000",
        ] {
            assert!(canonical_host(host).is_err(), "{host:?}");
        }
    }
}
