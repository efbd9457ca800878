//! Image policy YAML: any document is parsed or refused with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize as _;
use std::sync::Arc;
use verdict::verify::trust::TrustRoot;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let trust = Arc::new(TrustRoot::default());
    for doc in yaml_serde::Deserializer::from_str(text).take(8) {
        let Ok(value) = serde_json::Value::deserialize(doc) else { return };
        let _ = verdict::verify::imagepolicy::parse(value, "fuzz.yaml", std::path::Path::new("/nonexistent"), &trust);
    }
});
