//! The reader on arbitrary bytes: an error or an object, never a panic;
//! and an object that parses must diff against itself without a panic.
//! `crates/elfdiff/tests/malformed.rs` is the deterministic companion and
//! keeps every input this target has found as a regression test.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(obj) = elfdiff::read::Object::parse(Path::new("fuzz.o"), data) {
        let _ = elfdiff::analyse(&obj, &obj, None);
    }
});
