//! The schema of `kernel-fixes.toml`, the real-fix selection shared by
//! the differ's kernel test and the factory's. Each test reads the fields
//! it needs.
#![allow(dead_code)]

/// The whole file.
#[derive(serde::Deserialize)]
pub struct Fixes {
    pub release: String,
    pub fixed_version: String,
    #[serde(default)]
    pub large_objects: Vec<String>,
    pub fix: Vec<Fix>,
}

/// One fix: a source file taken whole from the newer package.
#[derive(serde::Deserialize)]
pub struct Fix {
    pub file: String,
    pub why: String,
    pub outcome: String,
    #[serde(default)]
    pub changed: Vec<String>,
    #[serde(default)]
    pub new: Vec<String>,
    #[serde(default)]
    pub refused: Vec<String>,
    /// The loadable module the object belongs to (vmlinux if absent).
    #[serde(default)]
    pub module: Option<String>,
    /// false: listed for the differ only (the reason is beside it).
    #[serde(default = "yes")]
    pub factory: bool,
}

fn yes() -> bool {
    true
}

/// The selection, parsed.
pub fn load() -> Fixes {
    toml::from_str(include_str!("../kernel-fixes.toml")).expect("kernel-fixes.toml")
}
