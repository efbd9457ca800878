//! The signed-document readers: strict JSON, the simple-signing payload, the in-toto
//! statement and the Rekor entry body, fed the same bytes. None panics, and a document
//! accepted strictly reads the same as serde_json reads it (strictness only refuses).
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use verdict::verify::cosign::{self, SignatureLayer};
use verdict::verify::proof::{Statement, IN_TOTO_PAYLOAD_TYPE};
use verdict::verify::strict;

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = strict::parse(data) {
        let loose: serde_json::Value = serde_json::from_slice(data).expect("strict JSON is JSON");
        assert_eq!(value, loose);
    }
    let _ = Statement::parse(IN_TOTO_PAYLOAD_TYPE, data);
    for dsse in [None, Some(IN_TOTO_PAYLOAD_TYPE.to_string())] {
        let layer = SignatureLayer {
            payload: data.to_vec(),
            signature: data.iter().take(64).copied().collect(),
            certificate: None,
            bundle: None,
            dsse_payload_type: dsse,
        };
        let _ = cosign::check_payload_digest(&layer, DIGEST);
        let body = base64::engine::general_purpose::STANDARD.encode(data);
        let _ = cosign::check_entry_body(&body, &layer, data);
    }
});
