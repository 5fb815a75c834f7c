//! The reader on hostile input: truncations and byte mutations of a real
//! object (compiled by gcc here) must give a clean error or a usable object
//! — never a panic — and a report from any object that parses. A stable,
//! deterministic companion to the cargo-fuzz target in `fuzz/`.

use std::path::Path;
use std::process::Command;

use elfdiff::read::Object;
use elfdiff::Error;
use object::elf;
use object::read::elf::{FileHeader, SectionHeader, Sym};
use object::LittleEndian as LE;

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

/// File offsets of the header and of the contents of section `name`.
fn section_at(obj: &[u8], name: &str) -> (usize, usize) {
    let h = elf::FileHeader64::<LE>::parse(obj).unwrap();
    let table = h.sections(LE, obj).unwrap();
    let (i, sh) = table
        .iter()
        .enumerate()
        .find(|(_, sh)| table.section_name(LE, sh).unwrap() == name.as_bytes())
        .unwrap_or_else(|| panic!("no section {name}"));
    let header = h.e_shoff(LE) as usize + i * usize::from(h.e_shentsize(LE));
    (header, sh.sh_offset(LE) as usize)
}

/// File offset of the symbol table entry of `name`.
fn symbol_at(obj: &[u8], name: &str) -> usize {
    let h = elf::FileHeader64::<LE>::parse(obj).unwrap();
    let table = h.sections(LE, obj).unwrap();
    let symtab = table.symbols(LE, obj, elf::SHT_SYMTAB).unwrap();
    let i = symtab
        .iter()
        .position(|s| s.name(LE, symtab.strings()).unwrap() == name.as_bytes())
        .unwrap_or_else(|| panic!("no symbol {name}"));
    section_at(obj, ".symtab").1 + i * 24
}

fn put(m: &mut [u8], at: usize, bytes: &[u8]) {
    m[at..at + bytes.len()].copy_from_slice(bytes);
}

/// The mutant must be refused as malformed (before the fix, each of these
/// panicked in a later pass); the message is returned for checking.
fn refused(good: &[u8], mutant: &[u8]) -> String {
    let p = Path::new("mutant.o");
    let orig = Object::parse(p, good).unwrap();
    match Object::parse(p, mutant) {
        Ok(o) => {
            let _ = elfdiff::diff(&orig, &o);
            panic!("the mutant parsed");
        }
        Err(err @ Error::Malformed { .. }) => err.to_string(),
        Err(err) => panic!("not reported as malformed: {err}"),
    }
}

/// Found by `cargo fuzz run read_object`: an addend near `i64::MAX`
/// overflowed `addend + 4` where correlation looks for the target of a
/// PC-relative reference.
#[test]
fn fuzz_relocation_addend_beyond_any_address() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample_object(dir.path());
    let mut m = good.clone();
    let rela = section_at(&m, ".rela.text.f").1;
    // Every entry: 24 bytes, the addend at +16.
    for e in 0..2 {
        put(&mut m, rela + e * 24 + 16, &i64::MAX.to_le_bytes());
    }
    let err = refused(&good, &m);
    assert!(
        err.contains("in .rela.text.f has addend 0x7fffffffffffffff, beyond any x86-64 address"),
        "{err}"
    );
}

/// The fuzzer's first crash also held a symbol reaching past its section
/// (0xa00000000, 4294967291 bytes, in a 5-byte section); ending at
/// `u64::MAX + 1`, as here, overflowed the end correlation computes.
#[test]
fn fuzz_symbol_outside_its_section() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample_object(dir.path());
    let mut m = good.clone();
    let f = symbol_at(&m, "f");
    put(&mut m, f + 8, &1u64.to_le_bytes()); // st_value
    put(&mut m, f + 16, &u64::MAX.to_le_bytes()); // st_size
    let err = refused(&good, &m);
    assert!(
        err.contains("(f) at 0x1 size 18446744073709551615 lies outside section"),
        "{err}"
    );
    assert!(err.contains("(.text.f, "), "{err}");
}

/// Found by the fuzzer: relocations applied to a section whose type says
/// it has no bytes (SHT_NULL, SHT_NOBITS) masked bytes that were never
/// read, slicing past an empty buffer.
#[test]
fn fuzz_relocations_into_a_section_without_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let good = sample_object(dir.path());
    for sh_type in [elf::SHT_NULL, elf::SHT_NOBITS] {
        let mut m = good.clone();
        let header = section_at(&m, ".text.f").0;
        put(&mut m, header + 4, &sh_type.to_le_bytes());
        let err = refused(&good, &m);
        assert!(
            err.contains("relocation section .rela.text.f patches section"),
            "{err}"
        );
        assert!(
            err.contains(&format!("(.text.f), which has no bytes (type {sh_type})")),
            "{err}"
        );
    }
}
