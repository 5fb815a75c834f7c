//! Call padding (Linux 6.12 on x86-64, `CONFIG_CALL_PADDING`): the kernel
//! compiles with `-fpatchable-function-entry=16,16`, so 16 nops precede
//! every function, and with call-depth tracking it writes an accounting
//! thunk there — for modules too, after checking the bytes are nops. A
//! carried function must keep its padding.

use std::path::{Path, PathBuf};

use elfdiff::read::Object;

use test_support::gcc;

fn compile(dir: &Path, name: &str, body: &str) -> Object {
    gcc::compile_source(
        dir,
        name,
        body,
        &["-fcf-protection=branch", "-fpatchable-function-entry=16,16"],
    )
}

#[test]
fn carried_functions_keep_their_call_padding() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("call-padding");
    std::fs::create_dir_all(&dir).unwrap();
    let common = "static int counter; int helper(int v) { return v * 3 + counter++; }\n";
    let orig = compile(
        &dir,
        "orig",
        &format!("{common}int f(int v) {{ return helper(v) + 1; }}"),
    );
    let patched = compile(
        &dir,
        "patched",
        &format!("{common}int f(int v) {{ return helper(v) + 2; }}"),
    );
    let (c, report) = elfdiff::analyse(&orig, &patched, None);
    assert_eq!(report.outcome, elfdiff::Outcome::Changed, "{report}");
    let e = elfdiff::emit::emit(&orig, &patched, &c, &report, &gcc::TestResolver).unwrap();
    std::fs::write(dir.join("out.o"), &e.bytes).unwrap();
    let out = Object::parse(Path::new("out.o"), &e.bytes).unwrap();
    let (id, f) = out.symbols().find(|(_, s)| s.name == "f").unwrap();
    let sec = out.section(f.section.unwrap());
    assert_eq!(f.value, 16, "f starts after its padding");
    assert!(
        sec.data[..16].iter().all(|&b| b == 0x90),
        "{:02x?}",
        &sec.data[..16]
    );
    // endbr64, then the fentry call whose relocation moved with the code.
    assert_eq!(&sec.data[16..20], &[0xf3, 0x0f, 0x1e, 0xfa]);
    let fentry = sec
        .relocs
        .iter()
        .find(|r| out.symbol(r.symbol).name == "__fentry__")
        .unwrap();
    assert_eq!(fentry.offset, 21);
    assert_eq!(sec.data[20], 0xe8);
    // The fentry record points at the call, through the moved symbol.
    let mcount = out.section_by_name("__mcount_loc").unwrap();
    let r = &out.section(mcount).relocs[0];
    let t = out.symbol(r.symbol);
    assert_eq!(t.value as i64 + r.addend, 20, "{id:?} record");
}
