//! Registry canonicalization: the canonical host is a fixed point, and a reference spelled
//! as a runtime may spell the same registry (other letter case, an explicit `:443`, a
//! Docker Hub alias) gets the same canonical host and normal form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict::images::{canonical_host, ImageRef};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(host) = canonical_host(text) {
        assert_eq!(canonical_host(&host).as_deref(), Ok(host.as_str()), "{text:?}");
    }
    let Ok(parsed) = ImageRef::parse(text) else { return };
    let again = ImageRef::parse(&parsed.to_string()).expect("a normal form parses");
    assert_eq!((&again.registry, again.to_string()), (&parsed.registry, parsed.to_string()));
    let Some((host, rest)) = text.split_once('/') else { return };
    if !(host.contains(['.', ':']) || host.eq_ignore_ascii_case("localhost")) {
        return;
    }
    let mut respellings = vec![host.to_ascii_uppercase(), host.to_ascii_lowercase()];
    if !host.ends_with(']') && !host.contains(':') {
        respellings.push(format!("{host}:443"));
    } else if host.starts_with('[') && host.ends_with(']') {
        respellings.push(format!("{host}:0443"));
    }
    if parsed.registry == "docker.io" {
        respellings.extend(["index.docker.io".into(), "REGISTRY-1.DOCKER.IO:443".into()]);
    }
    for spelling in respellings {
        let other = ImageRef::parse(&format!("{spelling}/{rest}"))
            .unwrap_or_else(|e| panic!("{spelling}/{rest} should parse like {text:?}: {e}"));
        assert_eq!(other.registry, parsed.registry, "{spelling} vs {host}");
        assert_eq!(other.to_string(), parsed.to_string());
    }
});
