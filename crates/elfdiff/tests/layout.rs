//! Entry sizes of special sections from a kernel's BTF: structures of the
//! kernel's layout (the 4.x `struct paravirt_patch_site` with its
//! clobbers, 16 bytes) compiled with debug information and encoded into
//! `.BTF` by `pahole -J`, the tool kernels build their BTF with.

use std::path::PathBuf;
use std::process::Command;

use test_support::gcc;

#[test]
fn entry_sizes_come_from_btf() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("layout-btf");
    std::fs::create_dir_all(&dir).unwrap();
    let body = r#"
typedef unsigned char u8; typedef unsigned short u16; typedef int s32;
struct paravirt_patch_site { u8 *instr; u8 type; u8 len; u16 clobbers; };
struct bug_entry { s32 bug_addr_disp; s32 file_disp; u16 line; u16 flags; };
struct alt_instr { s32 instr_offset; s32 repl_offset; u16 cpuid; u8 instrlen; u8 replacementlen; u8 padlen; } __attribute__((packed));
struct paravirt_patch_site site; struct bug_entry bug; struct alt_instr alt;
"#;
    gcc::compile_source(&dir, "types", body, &["-g"]);
    let obj = dir.join("types.o");
    // Without BTF: nothing known, no error.
    let none = elfdiff::layout::from_btf_file(&obj).unwrap();
    assert!(none.is_empty(), "{none:?}");
    let st = Command::new("pahole")
        .arg("-J")
        .arg(&obj)
        .status()
        .expect("pahole (dwarves) is a setup requirement");
    assert!(st.success());
    let sizes = elfdiff::layout::from_btf_file(&obj).unwrap();
    let want = [
        (".altinstructions", 13),
        (".parainstructions", 16),
        ("__bug_table", 12),
    ];
    assert_eq!(
        sizes
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>(),
        want
    );
}
