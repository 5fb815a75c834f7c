//! A patch module of several parts: two emitted objects (one per target),
//! each with its own `.noreboot.klp` records and strings, linked by `ld -r`
//! the way the module link concatenates them. [`klp::module::convert`] must
//! give every record its own part's names (regression: the names were
//! offsets into each part's own string table, so every part after the
//! first resolved wrong names). Needs gcc and binutils, no kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use elfdiff::emit::{Outside, Resolver};
use elfdiff::read::Object;

/// Kernel-like flags (as in elfdiff's C cases).
const CFLAGS: &[&str] = &[
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
    "-fno-common",
    "-w",
];

/// One part: a function calling a static helper and reading static data,
/// changed by the patch; `{p}` is the part's prefix.
fn source(p: &str, patched: bool) -> String {
    let op = if patched { "-" } else { "+" };
    format!(
        "static int {p}_state;\n\
         __attribute__((noinline)) static int {p}_helper(int x) {{ return x * 3 + {p}_state; }}\n\
         int {p}_other(int x) {{ return {p}_helper(x) + 1; }}\n\
         int {p}_entry(int x) {{ {p}_state {op}= x; return {p}_helper(x); }}\n"
    )
}

fn compile(dir: &Path, name: &str, src: &str) -> Object {
    let c = dir.join(format!("{name}.c"));
    let o = dir.join(format!("{name}.o"));
    std::fs::write(&c, src).unwrap();
    let st = Command::new("gcc")
        .args(CFLAGS)
        .arg(&c)
        .arg("-o")
        .arg(&o)
        .status()
        .expect("gcc is a setup requirement");
    assert!(st.success(), "gcc failed on {}", c.display());
    Object::read(&o).unwrap()
}

/// Statics are livepatch references into `object` at `sympos`.
struct PartResolver {
    object: &'static str,
    sympos: u32,
}

impl Resolver for PartResolver {
    fn resolve(&self, _name: &str, local: bool) -> Result<Outside, String> {
        Ok(if local {
            Outside::Livepatch {
                object: self.object.into(),
                sympos: self.sympos,
            }
        } else {
            Outside::Export
        })
    }
}

#[test]
fn linked_parts_keep_their_own_names() {
    let dir = tempfile::tempdir().unwrap();
    // Prefixes of different lengths: each part's string table differs in
    // layout, so a name read from the wrong table cannot come out right.
    let parts = [("a", "vmlinux", 0), ("beta_part", "modb", 2)];
    let mut emitted = Vec::new();
    for (p, object, sympos) in parts {
        let orig = compile(dir.path(), &format!("{p}_orig"), &source(p, false));
        let patched = compile(dir.path(), &format!("{p}_patched"), &source(p, true));
        let (c, report) = elfdiff::analyse(&orig, &patched, None);
        let e = elfdiff::emit::emit(
            &orig,
            &patched,
            &c,
            &report,
            &PartResolver { object, sympos },
        )
        .unwrap_or_else(|e| panic!("{p}: {e}\n{report}"));
        assert_eq!(e.functions, [format!("{p}_entry")], "{p}: {report}");
        let out = dir.path().join(format!("{p}_emitted.o"));
        std::fs::write(&out, &e.bytes).unwrap();
        emitted.push(out);
    }
    let linked = dir.path().join("linked.o");
    let st = Command::new("ld")
        .arg("-r")
        .arg("-o")
        .arg(&linked)
        .args(&emitted)
        .status()
        .expect("binutils is a setup requirement");
    assert!(st.success(), "ld -r failed");

    let converted = klp::module::convert(&std::fs::read(&linked).unwrap()).unwrap();
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (p, object, sympos) in parts {
        want.insert(
            format!(".klp.rela.{object}..text.{p}_entry"),
            [
                format!(".klp.sym.{object}.{p}_helper,{sympos}"),
                format!(".klp.sym.{object}.{p}_state,{sympos}"),
            ]
            .into(),
        );
    }
    let all: BTreeSet<String> = want.values().flatten().cloned().collect();
    assert_eq!(
        converted.symbols.iter().cloned().collect::<BTreeSet<_>>(),
        all
    );
    assert_eq!(
        converted.sections.iter().cloned().collect::<BTreeSet<_>>(),
        want.keys().cloned().collect::<BTreeSet<_>>()
    );
    // Each relocation section references its own part's symbols only.
    assert_eq!(klp_relocations(&converted.bytes), want);
}

/// The `.klp.sym` symbols each `.klp.rela.*` section references.
fn klp_relocations(data: &[u8]) -> BTreeMap<String, BTreeSet<String>> {
    use object::elf::{FileHeader64, Rela64, SHT_SYMTAB};
    use object::read::elf::{FileHeader, SectionHeader};
    use object::{Endianness, SymbolIndex};

    let header = FileHeader64::<Endianness>::parse(data).unwrap();
    let e = header.endian().unwrap();
    let sections = header.sections(e, data).unwrap();
    let symbols = sections.symbols(e, data, SHT_SYMTAB).unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sections.iter() {
        let name = String::from_utf8_lossy(sections.section_name(e, s).unwrap()).into_owned();
        if !name.starts_with(".klp.rela.") {
            continue;
        }
        let relas: &[Rela64<Endianness>] = s.data_as_array(e, data).unwrap();
        for r in relas {
            let sym = symbols
                .symbol(SymbolIndex(r.r_sym(e, false) as usize))
                .unwrap();
            let n = symbols.symbol_name(e, sym).unwrap();
            out.entry(name.clone())
                .or_default()
                .insert(String::from_utf8_lossy(n).into_owned());
        }
    }
    out
}
