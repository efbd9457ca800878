//! Review decoding and image extraction: any bytes, as `/validate` and `/v1/check` read them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict::admission::{self, Decoded};
use verdict::verify::ImageFacts;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = admission::parse_body(data) {
        if let Ok(Decoded::Judge(review)) = admission::decode(raw) {
            for image in verdict::images::extract(&review.subject.kind, review.object()) {
                let _ = ImageFacts::from_reference(&image);
            }
            let _ = review.subject.describe();
        }
    }
    if let Ok(reviews) = verdict::manifest::reviews(data) {
        for review in reviews {
            let _ = admission::decode(review);
        }
    }
});
