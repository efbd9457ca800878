//! Signature manifests and their layers as a registry might send them: parsed and checked
//! against a key and the public-good trust root without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict::verify::cosign::{self, SignatureLayer};
use verdict::verify::identity::{IdentityRule, Matcher};
use verdict::verify::trust::TrustRoot;

fuzz_target!(|data: &[u8]| {
    let Ok(layers) = cosign::parse_signature_manifest(data) else { return };
    let trust = TrustRoot::public_good();
    let rule = IdentityRule { issuer: None, subject: Matcher::Exact("a@b.c".into()), claims: Vec::new() };
    for layer in layers.iter().take(4) {
        // The manifest bytes stand in for the payload too, so payload parsing is fuzzed as well.
        let Ok(layer) = SignatureLayer::new(layer, data.to_vec()) else { continue };
        let _ = cosign::check_keyless(&layer, &trust, std::slice::from_ref(&rule), "sha256:00");
        let _ = cosign::check_with_keys(&layer, &[], Some(&trust), "sha256:00");
    }
});
