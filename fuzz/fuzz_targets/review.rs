//! Review decoding and image extraction: any bytes, as `/validate` and `/v1/check` read them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use verdict::admission::{self, Decoded};
use verdict::policy::PolicySet;
use verdict::verify::trust::TrustRoot;

/// The shipped policies: `/validate` parses a body for what they and verdict read.
static POLICY: LazyLock<PolicySet> = LazyLock::new(|| {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    PolicySet::load(&root, &Arc::new(TrustRoot::default())).expect("shipped policies load")
});

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = admission::parse_body(data, POLICY.review_reads()) {
        if let Ok(Decoded::Judge(review)) = admission::decode(raw) {
            let found = verdict::images::extract(&review.subject.kind, review.object());
            for image in found.into_iter().flatten() {
                let _ = image.parse();
            }
            let _ = review.subject.describe();
        }
    }
    if let Ok(reviews) = verdict::manifest::reviews(data) {
        for review in reviews {
            let _ = admission::decode(verdict::json::Node::from(&review));
        }
    }
});
