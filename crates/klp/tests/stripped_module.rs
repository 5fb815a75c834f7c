//! Duplicate statics of a loadable module as a distribution ships it:
//! several objects linked by `ld -r`, then stripped with `--strip-debug`
//! (what Debian's `INSTALL_MOD_STRIP=1` runs), which removes the
//! `STT_FILE` symbols that group locals by object file. Two objects of
//! hv_utils both have a `static int dm_reg_value` (hv_kvp.c,
//! hv_snapshot.c); the patch to each must reach its own.

use std::path::Path;
use std::process::Command;

use elfdiff::emit::{Outside, Resolver};
use elfdiff::read::Object;
use klp::{KernelResolver, KernelSymbols, Symvers};

const KVP: &str = "static int dm_reg_value; static int kvp_state; static const char kvp_devname[] = \"vmbus/hv_kvp\";\n\
int kvp_get(void) { return dm_reg_value + kvp_state + kvp_devname[kvp_state & 3]; }\n\
void kvp_set(int v) { dm_reg_value = v; kvp_state++; }\n\
static int kvp_handshake(int v) { return v ? dm_reg_value : kvp_state; }\n\
int kvp_call(int v) { return kvp_handshake(v) + 1; }\n";
const VSS: &str = "static int dm_reg_value; static int vss_state; static const char vss_devname[] = \"vmbus/hv_vss\";\n\
int vss_get(void) { return dm_reg_value + vss_state + vss_devname[vss_state & 3]; }\n\
void vss_set(int v) { dm_reg_value = v; vss_state++; }\n";

fn run(cmd: &mut Command) {
    let st = cmd
        .status()
        .expect("gcc and binutils are setup requirements");
    assert!(st.success(), "{cmd:?}");
}

fn compile(dir: &Path, name: &str, body: &str, extra: &[&str]) -> std::path::PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, body).unwrap();
    let out = dir.join(format!("{name}{}.o", extra.len()));
    run(Command::new("gcc")
        .args(["-c", "-O2", "-fno-inline", "-fno-pic", "-mcmodel=kernel"])
        .args(extra)
        .arg(&src)
        .arg("-o")
        .arg(&out));
    out
}

#[test]
fn duplicate_statics_of_a_stripped_module_resolve_through_their_object() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The module as shipped: kbuild's objects linked, then stripped.
    let kvp = compile(d, "hv_kvp", KVP, &[]);
    let vss = compile(d, "hv_snapshot", VSS, &[]);
    let ko = d.join("hv_utils.ko");
    run(Command::new("ld")
        .arg("-r")
        .arg("-o")
        .arg(&ko)
        .arg(&vss)
        .arg(&kvp));
    run(Command::new("strip").arg("--strip-debug").arg(&ko));
    let module = KernelSymbols::from_module(&ko).unwrap();
    assert_eq!(module.named("dm_reg_value").count(), 2);
    let (vmlinux, symvers) = (KernelSymbols::default(), Symvers::default());
    // The objects the factory compiles, with its section flags.
    let flags = ["-ffunction-sections", "-fdata-sections"];
    for (name, body, want) in [("hv_snapshot", VSS, 1), ("hv_kvp", KVP, 2)] {
        let orig = Object::read(&compile(d, name, body, &flags)).unwrap();
        let r = KernelResolver::for_module(&vmlinux, &symvers, "hv_utils", &module, &orig).unwrap();
        assert_eq!(
            r.resolve("dm_reg_value", true),
            Ok(Outside::Livepatch {
                object: "hv_utils".into(),
                sympos: want
            }),
            "{name}"
        );
        // A static only this object has stays unique.
        let own = if name == "hv_kvp" {
            "kvp_state"
        } else {
            "vss_state"
        };
        assert_eq!(
            r.resolve(own, true),
            Ok(Outside::Livepatch {
                object: "hv_utils".into(),
                sympos: 0
            })
        );
    }
    // An object the module does not hold is not guessed into it.
    let other = compile(d, "other", "static int dm_reg_value; static int a, b, c;\nint f(void) { return dm_reg_value + a + b + c; }\nvoid g(int v) { dm_reg_value = a = b = c = v; }\n", &flags);
    let r = KernelResolver::for_module(
        &vmlinux,
        &symvers,
        "hv_utils",
        &module,
        &Object::read(&other).unwrap(),
    )
    .unwrap();
    assert!(r.resolve("dm_reg_value", true).is_err());
}

/// An object whose only static is one other objects of the module also
/// have (xfs_pnfs.c: a one-shot flag, `__already_done.1`, in four of xfs's
/// objects) cannot be placed; its patch still resolves what it reaches
/// that is unique (its functions, the module's other symbols), and only a
/// reference to the ambiguous static fails, naming it.
#[test]
fn an_object_that_cannot_be_placed_still_resolves_its_unique_symbols() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let flag = |name: &str| {
        format!("static int once; int {name}(int v) {{ if (!once) {{ once = 1; return v; }} return 0; }}\n")
    };
    let objs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| compile(d, n, &flag(&format!("{n}_fn")), &[]))
        .collect();
    let ko = d.join("m.ko");
    run(Command::new("ld").arg("-r").arg("-o").arg(&ko).args(&objs));
    run(Command::new("strip").arg("--strip-debug").arg(&ko));
    let module = KernelSymbols::from_module(&ko).unwrap();
    assert_eq!(module.named("once").count(), 3);
    let (vmlinux, symvers) = (KernelSymbols::default(), Symvers::default());
    let orig = Object::read(&compile(
        d,
        "b",
        &flag("b_fn"),
        &["-ffunction-sections", "-fdata-sections"],
    ))
    .unwrap();
    let r = KernelResolver::for_module(&vmlinux, &symvers, "m", &module, &orig).unwrap();
    assert_eq!(
        r.resolve("a_fn", false),
        Ok(Outside::Livepatch {
            object: "m".into(),
            sympos: 0
        })
    );
    let err = r.resolve("once", true).unwrap_err();
    assert!(err.contains("once"), "{err}");
}

/// The object before another can end with a static of the same name as one
/// of the next object's (erofs: decompressor.c's `__func__.2` right before
/// zmap.c's statics, which include a `__func__.2` too): the block of the
/// second object leaves its neighbour's namesake out, so the patch reaches
/// its own static, not the neighbour's.
#[test]
fn a_neighbours_namesake_is_not_taken_into_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = "static int shared; int first_fn(int v) { shared += v; return shared; }\n";
    let second = "static int shared; static int za; static int zb;\n\
                  int second_fn(int v) { shared += v; za = v; return shared + za + zb; }\n\
                  void second_set(int v) { zb = v; shared = v; }\n";
    let a = compile(d, "first", first, &[]);
    let b = compile(d, "second", second, &[]);
    let ko = d.join("m.ko");
    run(Command::new("ld")
        .arg("-r")
        .arg("-o")
        .arg(&ko)
        .arg(&a)
        .arg(&b));
    run(Command::new("strip").arg("--strip-debug").arg(&ko));
    let module = KernelSymbols::from_module(&ko).unwrap();
    assert_eq!(module.named("shared").count(), 2);
    let (vmlinux, symvers) = (KernelSymbols::default(), Symvers::default());
    let flags = ["-ffunction-sections", "-fdata-sections"];
    let orig = Object::read(&compile(d, "second", second, &flags)).unwrap();
    let r = KernelResolver::for_module(&vmlinux, &symvers, "m", &module, &orig).unwrap();
    assert_eq!(
        r.resolve("shared", true),
        Ok(Outside::Livepatch {
            object: "m".into(),
            sympos: 2
        })
    );
}
