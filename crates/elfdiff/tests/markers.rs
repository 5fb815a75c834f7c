//! kpatch's author macros as noreboot-build ships them
//! (`crates/factory/include/kpatch-macros.h`), compiled into an object and
//! read back by `elfdiff::markers`: a fix written for kpatch declares its
//! callbacks, ignored functions and ignored sections the way kpatch's own
//! header does, and the factory finds them.

use std::path::{Path, PathBuf};

use elfdiff::markers::{self, Callback};

use test_support::gcc;

/// The three attributes of the kernel's `<linux/compiler.h>` the header
/// uses, spelled as the kernel spells them.
const COMPILER_H: &str = r#"
#define __used __attribute__((__used__))
#define __section(s) __attribute__((__section__(s)))
#define ___PASTE(a, b) a##b
#define __PASTE(a, b) ___PASTE(a, b)
#define __UNIQUE_ID(prefix) __PASTE(__PASTE(__UNIQUE_ID_, prefix), __COUNTER__)
#define NULL ((void *)0)
"#;

const FIX: &str = r#"
#include "kpatch-macros.h"
int state;
static int prepare(struct klp_object *obj) { state = 1; return 0; }
static void settle(struct klp_object *obj) { state = 2; }
static void leave(struct klp_object *obj) { state = 3; }
static void gone(struct klp_object *obj) { state = 0; }
int sleeper(int v) { return v + state; }
KPATCH_PRE_PATCH_CALLBACK(prepare);
KPATCH_POST_PATCH_CALLBACK(settle);
KPATCH_PRE_UNPATCH_CALLBACK(leave);
KPATCH_POST_UNPATCH_CALLBACK(gone);
KPATCH_IGNORE_FUNCTION(sleeper);
KPATCH_IGNORE_SECTION(".init.text");
KPATCH_FORCE_UNSAFE(sleeper);
"#;

#[test]
fn kpatch_macros_are_read_as_kpatch_writes_them() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kpatch-macros");
    std::fs::create_dir_all(dir.join("linux")).unwrap();
    std::fs::write(dir.join("linux/compiler.h"), COMPILER_H).unwrap();
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../factory/include");
    let obj = gcc::compile_source(
        &dir,
        "fix",
        FIX,
        &[
            &format!("-I{}", dir.display()),
            &format!("-I{}", include.display()),
        ],
    );
    let got = markers::callbacks(&obj).unwrap();
    let want = [
        ("pre_patch", "prepare"),
        ("post_patch", "settle"),
        ("pre_unpatch", "leave"),
        ("post_unpatch", "gone"),
    ];
    for (kind, function) in want {
        let c = Callback {
            kind: kind.into(),
            function: function.into(),
        };
        assert!(got.contains(&c), "{c:?} not among {got:?}");
    }
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        markers::ignored_functions(&obj)
            .into_iter()
            .collect::<Vec<_>>(),
        ["sleeper"]
    );
    assert_eq!(
        markers::ignored_sections(&obj)
            .into_iter()
            .collect::<Vec<_>>(),
        [".init.text"]
    );
    assert_eq!(
        markers::forced_functions(&obj)
            .into_iter()
            .collect::<Vec<_>>(),
        ["sleeper"]
    );
    // The records are the author's, not data of the patch.
    for (id, s) in obj.sections() {
        if markers::is_marker_section(&s.name) {
            assert!(!elfdiff::include::is_runtime(&obj, id), "{}", s.name);
        }
    }
}
