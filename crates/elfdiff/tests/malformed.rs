//! The reader on hostile input: truncations and byte mutations of a real
//! object (compiled by gcc here) must give a clean error or a usable object
//! — never a panic — and a report from any object that parses. A stable,
//! deterministic companion to the cargo-fuzz target in `fuzz/`.

use std::path::Path;
use std::process::Command;

use elfdiff::read::Object;
use elfdiff::Error;

fn sample_object(dir: &Path) -> Vec<u8> {
    let src = dir.join("s.c");
    std::fs::write(
        &src,
        "extern int printk(const char *, ...);\nstatic int n;\nint f(int a) { n += a; printk(\"f %d\\n\", a); return n; }\nstatic const int t[3] = {1, 2, 3};\nint g(int i) { return t[i % 3] + f(i); }\n",
    )
    .unwrap();
    let obj = dir.join("s.o");
    let st = Command::new("gcc")
        .args([
            "-c",
            "-O2",
            "-ffunction-sections",
            "-fdata-sections",
            "-pg",
            "-mfentry",
            "-mrecord-mcount",
            "-fno-pic",
            "-mcmodel=kernel",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(obj).unwrap()
}

/// xorshift: deterministic mutations without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn truncated_and_mutated_objects_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample_object(dir.path());
    let p = Path::new("mutant.o");
    assert!(Object::parse(p, &good).is_ok());
    for cut in (0..good.len()).step_by(7) {
        if let Ok(o) = Object::parse(p, &good[..cut]) {
            let _ = elfdiff::diff(&o, &o);
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for _ in 0..5000 {
        let mut m = good.clone();
        for _ in 0..(1 + rng.next() % 4) {
            let i = (rng.next() as usize) % m.len();
            m[i] = rng.next() as u8;
        }
        if let Ok(o) = Object::parse(p, &m) {
            parsed += 1;
            let orig = Object::parse(p, &good).unwrap();
            let _ = elfdiff::diff(&orig, &o);
        }
    }
    assert!(
        parsed > 100,
        "mutations should often still parse ({parsed})"
    );
}

#[test]
fn wrong_kinds_of_input_are_named() {
    let p = Path::new("x.o");
    let err = Object::parse(p, b"not an elf").unwrap_err();
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
    assert!(err.to_string().starts_with("x.o: malformed ELF"), "{err}");
    // An x86-64 executable is ELF but not a relocatable object.
    let exe = std::fs::read("/bin/true").unwrap();
    let err = Object::parse(p, &exe).unwrap_err();
    assert!(
        err.to_string().contains("only relocatable objects"),
        "{err}"
    );
    let err = Object::read(Path::new("/nonexistent/y.o")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/y.o"), "{err}");
    // A 32-bit object and an arm64 object: the header says so.
    let dir = tempfile::tempdir().unwrap();
    let good = sample_object(dir.path());
    let mut class32 = good.clone();
    class32[4] = 1; // EI_CLASS = ELFCLASS32
    let err = Object::parse(p, &class32).unwrap_err();
    assert!(err.to_string().contains("not a 64-bit"), "{err}");
    let mut arm = good.clone();
    arm[18..20].copy_from_slice(&183u16.to_le_bytes()); // e_machine = EM_AARCH64
    let err = Object::parse(p, &arm).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("only x86-64"), "{err}");
}
