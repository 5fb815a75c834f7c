//! The schema of the real-fix selections (`crates/elfdiff/tests/kernel-fixes*.toml`)
//! the differ's kernel test and the factory's share. Each test reads the
//! fields it needs.

use std::collections::BTreeMap;

/// The whole file.
#[derive(serde::Deserialize)]
pub struct Fixes {
    /// The kernel release the fixes are built for.
    pub release: String,
    /// The Debian source version the fixed files are taken from.
    pub fixed_version: String,
    /// The largest objects of the kernel: each must diff against itself
    /// to "no change".
    #[serde(default)]
    pub large_objects: Vec<String>,
    /// Special sections of which the emitted objects of the selection,
    /// together, must keep at least one entry: the kernel's tables the
    /// selection is known to exercise.
    #[serde(default)]
    pub special_kept: Vec<String>,
    /// The fixes.
    pub fix: Vec<Fix>,
}

/// One fix: a source file taken whole from the newer package.
#[derive(serde::Deserialize)]
pub struct Fix {
    /// The C file or header, relative to the tree.
    pub file: String,
    /// Why it is in the selection.
    pub why: String,
    /// The differ's expected outcome: changed, no-change or refused.
    pub outcome: String,
    /// Functions the differ must find changed.
    #[serde(default)]
    pub changed: Vec<String>,
    /// Functions the differ must find new.
    #[serde(default)]
    pub new: Vec<String>,
    /// Symbols the differ must refuse.
    #[serde(default)]
    pub refused: Vec<String>,
    /// The loadable module the object belongs to (vmlinux if absent).
    #[serde(default)]
    pub module: Option<String>,
    /// `file` is a header: every object including it is compiled twice,
    /// and there is no line map (the factory has none for headers).
    #[serde(default)]
    pub header: bool,
    /// The object `changed`/`new`/`refused` describe (for a header fix,
    /// which has many includers); derived from `file` if absent.
    #[serde(default)]
    pub object: Option<String>,
    /// Further functions the factory replaces, by target (module name or
    /// vmlinux): other objects reached by the header. For the fix's own
    /// target they are added to `changed`.
    #[serde(default)]
    pub also: BTreeMap<String, Vec<String>>,
    /// Per replaced function, exactly the `.klp.sym` symbols (without the
    /// `.klp.sym.` prefix, e.g. `smc.smc_lgr_terminate_sched,0`) its
    /// livepatch relocations in the built module reference (checked by the
    /// factory test only).
    #[serde(default)]
    pub klp_syms: BTreeMap<String, Vec<String>>,
    /// false: listed for the differ only (the reason is beside it).
    #[serde(default = "yes")]
    pub factory: bool,
    /// false: the target module cannot load in the lab (it needs Xen or
    /// Hyper-V, the reason is beside it); `--verify` then verifies the
    /// patch with the target absent and must say so.
    #[serde(default = "yes")]
    pub target_loads: bool,
}

fn yes() -> bool {
    true
}

impl Fix {
    /// The object the differ's expectations describe.
    pub fn object(&self) -> String {
        match (&self.object, self.file.strip_suffix(".c")) {
            (Some(o), _) => o.clone(),
            (None, Some(stem)) if !self.header => format!("{stem}.o"),
            _ => panic!("{}: a header fix names its `object`", self.file),
        }
    }

    /// Every target the factory must patch, with the functions it must
    /// replace there: `changed` in the fix's own target, plus `also`.
    pub fn targets(&self) -> BTreeMap<String, Vec<String>> {
        let mut t = self.also.clone();
        let own = self.module.clone().unwrap_or_else(|| "vmlinux".into());
        t.entry(own)
            .or_default()
            .extend(self.changed.iter().cloned());
        t
    }
}

/// The selections, by file name: the Debian 6.1 kernel's (the factory
/// builds and verifies these) and the 6.12 kernel's.
pub const SELECTIONS: &[(&str, &str)] = &[
    (
        "kernel-fixes.toml",
        include_str!("../../elfdiff/tests/kernel-fixes.toml"),
    ),
    (
        "kernel-fixes-6.12.toml",
        include_str!("../../elfdiff/tests/kernel-fixes-6.12.toml"),
    ),
    (
        "kernel-fixes-reach.toml",
        include_str!("../../elfdiff/tests/kernel-fixes-reach.toml"),
    ),
];

/// The 6.1 selection, parsed.
pub fn load() -> Fixes {
    load_named("kernel-fixes.toml")
}

/// The selection in `name` (one of [`SELECTIONS`]), parsed.
pub fn load_named(name: &str) -> Fixes {
    let text = SELECTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no selection {name}"))
        .1;
    toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"))
}
