//! Fuzz the object reader and the comparison passes: any input must give a
//! clean error or a report, never a panic. Run with
//! `cargo fuzz run read` from crates/elfdiff (seed corpus: any .o files).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(obj) = elfdiff::read::Object::parse("fuzz.o".as_ref(), data) {
        let _ = elfdiff::diff(&obj, &obj);
    }
});
