//! Runtime constants (Linux 6.12 on): the kernel writes values it learns
//! at boot (`USER_PTR_MAX`, the dentry hash) straight into its code,
//! once, and never into modules. A carried function that uses a pointer
//! constant must load the variable instead of keeping the placeholder; one
//! that uses a shift constant must be refused. The C below uses the
//! kernel's own asm shapes (arch/x86/include/asm/runtime-const.h).

use std::path::{Path, PathBuf};
use std::process::Command;

use elfdiff::read::Object;

const PRELUDE: &str = r#"
extern unsigned long USER_PTR_MAX;
extern unsigned int d_hash_shift;
#define runtime_const_ptr(sym) ({ unsigned long __ret;			\
	asm volatile("mov %1,%0\n1:\n"					\
		".pushsection runtime_ptr_" #sym ",\"a\"\n\t"		\
		".long 1b - %c2 - .\n"					\
		".popsection"						\
		:"=r" (__ret)						\
		:"i" ((unsigned long)0x0123456789abcdefull),		\
		 "i" (sizeof(long)));					\
	__ret; })
#define runtime_const_shift_right_32(val, sym) ({			\
	unsigned int __ret = (val);					\
	asm volatile("shrl $12,%k0\n1:\n"				\
		".pushsection runtime_shift_" #sym ",\"a\"\n\t"		\
		".long 1b - 1 - .\n"					\
		".popsection"						\
		:"+r" (__ret));						\
	__ret; })
int access_ok(unsigned long p) { return p <= runtime_const_ptr(USER_PTR_MAX); }
/* The same site with a register that needs REX.B (movabs) / REX.R (mov). */
int access_ok_r9(unsigned long p) {
	register unsigned long limit asm("r9");
	asm volatile("mov %1,%0\n1:\n"
		".pushsection runtime_ptr_USER_PTR_MAX,\"a\"\n\t"
		".long 1b - %c2 - .\n"
		".popsection"
		:"=r" (limit)
		:"i" ((unsigned long)0x0123456789abcdefull), "i" (sizeof(long)));
	return p <= limit;
}
unsigned int hash_of(unsigned int h) { return runtime_const_shift_right_32(h, d_hash_shift); }
"#;

use test_support::gcc;

fn compile(dir: &Path, name: &str, body: &str) -> Object {
    gcc::compile_source(dir, name, &format!("{PRELUDE}\n{body}\n"), &[])
}

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn pointer_constant_becomes_a_load_of_its_variable() {
    let d = dir("runtime-const-ptr");
    let orig = compile(
        &d,
        "orig",
        "long check(unsigned long p) { return access_ok(p) ? 0 : -14; }\n\
         long check_r9(unsigned long p) { return access_ok_r9(p) ? 0 : -14; }",
    );
    let patched = compile(
        &d,
        "patched",
        "long check(unsigned long p) { return access_ok(p + 1) ? 0 : -22; }\n\
         long check_r9(unsigned long p) { return access_ok_r9(p + 1) ? 0 : -22; }",
    );
    let (c, report) = elfdiff::analyse(&orig, &patched, None);
    assert_eq!(report.outcome, elfdiff::Outcome::Changed, "{report}");
    // access_ok is inlined into check, or called: either way the carried
    // code holds the site exactly once.
    let e = elfdiff::emit::emit(&orig, &patched, &c, &report, &gcc::TestResolver).unwrap();
    let out = Object::parse(Path::new("out.o"), &e.bytes).unwrap();
    let mut loads = 0;
    for (_, s) in out.sections() {
        if !s.is_text() {
            continue;
        }
        assert!(
            !s.data
                .windows(8)
                .any(|w| w == 0x0123_4567_89ab_cdef_u64.to_le_bytes()),
            "{} still holds the placeholder",
            s.name
        );
        for r in &s.relocs {
            if out.symbol(r.symbol).name == "USER_PTR_MAX" {
                let at = r.offset as usize;
                // mov disp32(%rip), %r64 then a 3-byte nop.
                assert_eq!(s.data[at - 3] & 0xfb, 0x48, "REX.W in {}", s.name);
                assert_eq!(s.data[at - 2], 0x8b);
                assert_eq!(s.data[at - 1] & 0xc7, 0x05, "RIP-relative ModRM");
                assert_eq!(&s.data[at + 4..at + 7], &[0x0f, 0x1f, 0x00]);
                assert_eq!(r.r_type, object::elf::R_X86_64_PC32);
                assert_eq!(r.addend, -4);
                loads += 1;
            }
        }
    }
    assert_eq!(
        loads, 2,
        "one load of USER_PTR_MAX in each of {:?}",
        e.functions
    );
    assert!(e.exports.contains(&"USER_PTR_MAX".to_string()));
    // objdump agrees on the instruction.
    let obj = d.join("out.o");
    std::fs::write(&obj, &e.bytes).unwrap();
    let dis = Command::new("objdump")
        .arg("-dr")
        .arg(&obj)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dis.stdout);
    let loads: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("mov    0x0(%rip),%r"))
        .collect();
    assert_eq!(loads.len(), 2, "{text}");
    assert!(loads.iter().any(|l| l.contains("%r9")), "{text}");
    assert_eq!(
        text.matches("R_X86_64_PC32\tUSER_PTR_MAX-0x4").count(),
        2,
        "{text}"
    );
}

#[test]
fn shift_constant_is_refused() {
    let d = dir("runtime-const-shift");
    let orig = compile(
        &d,
        "orig",
        "unsigned int bucket(unsigned int h) { return hash_of(h) & 7; }",
    );
    let patched = compile(
        &d,
        "patched",
        "unsigned int bucket(unsigned int h) { return hash_of(h) & 15; }",
    );
    let report = elfdiff::diff(&orig, &patched);
    assert_eq!(report.outcome, elfdiff::Outcome::Refused, "{report}");
    assert!(
        report
            .refusals
            .iter()
            .any(|r| r.reason.contains("runtime constant d_hash_shift")),
        "{report}"
    );
}
