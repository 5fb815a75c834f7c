//! C test sources compiled the way the kernel's build shapes objects, and
//! a resolver for emitting them without a kernel; shared by the differ's
//! C-level tests.

use std::path::Path;
use std::process::Command;

use elfdiff::read::Object;

/// The flags the kernel's build uses that shape object layout, plus the
/// function and data sections noreboot-build adds.
pub const CFLAGS: &[&str] = &[
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
    "-fno-asynchronous-unwind-tables",
    "-fno-stack-protector",
    "-fno-jump-tables",
    "-fno-common",
    "-w",
];

/// Compiles `src` to `out` with [`CFLAGS`] and `extra`.
pub fn compile(src: &Path, out: &Path, extra: &[&str]) {
    let st = Command::new("gcc")
        .args(CFLAGS)
        .args(extra)
        .arg(src)
        .arg("-o")
        .arg(out)
        .status()
        .expect("gcc is a setup requirement");
    assert!(st.success(), "gcc failed on {}", src.display());
}

/// Compiles `src` to `out` with another compiler (clang) and the flags of
/// [`CFLAGS`] it knows: clang has no `-mrecord-mcount` (kernels built by
/// clang have objtool write `__mcount_loc`).
pub fn compile_with(cc: &str, src: &Path, out: &Path) {
    let st = Command::new(cc)
        .args(
            CFLAGS
                .iter()
                .filter(|f| cc == "gcc" || **f != "-mrecord-mcount"),
        )
        .arg(src)
        .arg("-o")
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("{cc} is a setup requirement: {e}"));
    assert!(st.success(), "{cc} failed on {}", src.display());
}

/// Writes `body` to `dir/name.c`, compiles it (see [`compile`]) and reads
/// the object.
pub fn compile_source(dir: &Path, name: &str, body: &str, extra: &[&str]) -> Object {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, body).unwrap();
    let out = dir.join(format!("{name}.o"));
    compile(&src, &out, extra);
    Object::read(&out).unwrap()
}

/// Test resolution: statics of the object are livepatch references,
/// everything undefined is taken as exported.
pub struct TestResolver;

impl elfdiff::emit::Resolver for TestResolver {
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

/// Test resolution for a loadable module's object: its statics are
/// livepatch references into the module named, everything undefined is
/// taken as exported by vmlinux.
pub struct ModuleResolver<'a>(pub &'a str);

impl elfdiff::emit::Resolver for ModuleResolver<'_> {
    fn resolve(&self, _name: &str, local: bool) -> Result<elfdiff::emit::Outside, String> {
        Ok(if local {
            elfdiff::emit::Outside::Livepatch {
                object: self.0.to_string(),
                sympos: 0,
            }
        } else {
            elfdiff::emit::Outside::Export
        })
    }
}
