//! Call padding (Linux 6.12 on x86-64, `CONFIG_CALL_PADDING`): the kernel
//! compiles with `-fpatchable-function-entry=16,16`, so 16 nops precede
//! every function, and with call-depth tracking it writes an accounting
//! thunk there — for modules too, after checking the bytes are nops. A
//! carried function must keep its padding.

use std::path::{Path, PathBuf};
use std::process::Command;

use elfdiff::read::Object;

fn compile(dir: &Path, name: &str, body: &str) -> Object {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, body).unwrap();
    let out = dir.join(format!("{name}.o"));
    let st = Command::new("gcc")
        .args([
            "-c",
            "-O2",
            "-fno-pic",
            "-mcmodel=kernel",
            "-mno-red-zone",
            "-ffunction-sections",
            "-fdata-sections",
            "-pg",
            "-mfentry",
            "-mrecord-mcount",
            "-fcf-protection=branch",
            "-fpatchable-function-entry=16,16",
            "-fno-asynchronous-unwind-tables",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("gcc is a setup requirement");
    assert!(st.success(), "gcc failed on {}", src.display());
    Object::read(&out).unwrap()
}

struct Exported;

impl elfdiff::emit::Resolver for Exported {
    fn resolve(&self, _name: &str, local: bool) -> Result<elfdiff::emit::Outside, String> {
        Ok(if local {
            elfdiff::emit::Outside::Livepatch {
                object: "vmlinux".into(),
                sympos: 0,
            }
        } else {
            elfdiff::emit::Outside::Export
        })
    }
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
    let e = elfdiff::emit::emit(&orig, &patched, &c, &report, &Exported).unwrap();
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
