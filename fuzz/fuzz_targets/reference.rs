//! Image reference parsing. A parsed reference printed and parsed again is the same reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verdict::images::ImageRef;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(parsed) = ImageRef::parse(text) {
        let again = ImageRef::parse(&parsed.to_string()).expect("a normalized reference parses");
        assert_eq!(again.to_string(), parsed.to_string());
    }
});
