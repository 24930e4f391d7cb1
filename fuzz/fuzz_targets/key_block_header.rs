//! Parses arbitrary text as a key block header. Parsing must never panic, and a header that
//! parses must print as text that parses back to the same header.

#![no_main]

use libfuzzer_sys::fuzz_target;
use station::crypto::tr31::KeyBlockHeader;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(header) = text.parse::<KeyBlockHeader>() else {
        return;
    };
    let printed = header.to_string();
    let reparsed: KeyBlockHeader = printed
        .parse()
        .unwrap_or_else(|error| panic!("printed header {printed:?} does not parse: {error}"));
    assert_eq!(reparsed, header, "{printed}");
});
