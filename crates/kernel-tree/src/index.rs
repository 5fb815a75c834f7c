//! The build index of a prepared source tree: every object this kernel
//! configuration compiles, from which C file, with which include paths, and
//! whether it is built into vmlinux or into which loadable module. It comes
//! from kbuild itself (`make -n vmlinux modules`, about 15 s once per
//! workspace, cached) so it follows the configuration exactly; header
//! dependents are found by following `#include` lines through the same
//! include paths the compiler uses.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::source::SourceTree;
use crate::{Error, Result};

/// Where an object ends up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Built into the kernel image.
    Vmlinux,
    /// Part of this loadable module (its name as the kernel knows it).
    Module(String),
}

impl Target {
    /// `vmlinux` or the module name: the livepatch object name.
    pub fn name(&self) -> &str {
        match self {
            Target::Vmlinux => "vmlinux",
            Target::Module(m) => m,
        }
    }
}

/// One compiled object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedObject {
    /// The object, relative to the tree (`fs/ext4/super.o`).
    pub object: String,
    /// Its C source, relative to the tree.
    pub source: String,
    /// Where it is linked.
    pub target: Target,
    /// `-I` directories of its compile command, relative to the tree, in
    /// order.
    pub include_dirs: Vec<String>,
}

/// The objects of one configured tree.
#[derive(Debug, Clone, Default)]
pub struct BuildIndex {
    objects: Vec<IndexedObject>,
    by_source: HashMap<String, usize>,
}

const INDEX_FILE: &str = "build-index.tsv";

impl SourceTree {
    /// The build index, computed on first use and cached beside the tree.
    pub fn index(&self) -> Result<BuildIndex> {
        let file = self.dir().parent().unwrap_or(self.dir()).join(INDEX_FILE);
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Ok(index) = BuildIndex::parse(&text) {
                return Ok(index);
            }
        }
        let _lock = self.lock()?;
        let started = std::time::Instant::now();
        let mut cmd = self.make(&["-n", "-k", "vmlinux", "modules"]);
        let out = cmd.output().map_err(|e| Error::spawn(&cmd, "make", e))?;
        // `-k`: modpost has nothing to post-process in a dry run and fails;
        // the compile commands before it are all there.
        let index = BuildIndex::from_dry_run(&String::from_utf8_lossy(&out.stdout));
        if index.objects.len() < 100 {
            return Err(Error::Command {
                command: format!("{cmd:?}"),
                status: out.status.to_string(),
                stderr: format!(
                    "the dry run listed only {} objects\n{}",
                    index.objects.len(),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, index.serialize()).map_err(|e| Error::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &file).map_err(|e| Error::io("write", &file, e))?;
        self.grew()?;
        tracing::info!(
            objects = index.objects.len(),
            seconds = started.elapsed().as_secs_f64(),
            "build index"
        );
        Ok(index)
    }
}

impl BuildIndex {
    /// Reads the compile commands of a `make -n` transcript.
    pub fn from_dry_run(text: &str) -> BuildIndex {
        let mut index = BuildIndex::default();
        for line in text.lines() {
            // The real command, not the copy kbuild echoes into .cmd files.
            if !line.contains(" -c -o ") || line.contains("printf") {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(o) = words.iter().position(|w| *w == "-o") else {
                continue;
            };
            let Some(object) = words.get(o + 1).map(|w| w.trim_end_matches(';')) else {
                continue;
            };
            let Some(source) = words[o + 2..]
                .iter()
                .map(|w| w.trim_end_matches(';'))
                .find(|w| w.ends_with(".c"))
            else {
                continue;
            };
            if !object.ends_with(".o") || index.by_source.contains_key(source) {
                continue;
            }
            let module = words.contains(&"-DMODULE");
            let modname = module_name(&words);
            let target = match (module, modname) {
                (true, Some(m)) => Target::Module(m),
                _ => Target::Vmlinux,
            };
            let mut include_dirs = Vec::new();
            for (i, w) in words.iter().enumerate() {
                let dir = if *w == "-I" {
                    words.get(i + 1).copied()
                } else {
                    w.strip_prefix("-I")
                };
                if let Some(d) = dir.filter(|d| !d.is_empty()) {
                    include_dirs.push(d.trim_start_matches("./").to_string());
                }
            }
            index.push(IndexedObject {
                object: object.trim_start_matches("./").to_string(),
                source: source.trim_start_matches("./").to_string(),
                target,
                include_dirs,
            });
        }
        index
    }

    /// The format line first in the index file: an index written by an
    /// older noreboot (which read no module names of 6.13+ kbuild) is made
    /// again.
    const HEADER: &'static str = "# noreboot build index 2: object\tsource\ttarget\tinclude dirs\n";

    /// Adds an object, its source path normalized: kbuild names a file
    /// another directory's Makefile builds through that directory
    /// (`arch/x86/kvm/../../../virt/kvm/dirty_ring.c`), a patch by its
    /// place in the tree (`virt/kvm/dirty_ring.c`).
    fn push(&mut self, mut o: IndexedObject) {
        o.source = normalize(Path::new(&o.source))
            .to_string_lossy()
            .into_owned();
        self.by_source.insert(o.source.clone(), self.objects.len());
        self.objects.push(o);
    }

    fn serialize(&self) -> String {
        let mut s = String::from(Self::HEADER);
        for o in &self.objects {
            s.push_str(&format!(
                "{}\t{}\t{}\t{}\n",
                o.object,
                o.source,
                match &o.target {
                    Target::Vmlinux => "vmlinux".to_string(),
                    Target::Module(m) => format!("module:{m}"),
                },
                o.include_dirs.join(" ")
            ));
        }
        s
    }

    fn parse(text: &str) -> std::result::Result<BuildIndex, String> {
        if !text.starts_with(Self::HEADER) {
            return Err("written by another version".into());
        }
        let mut index = BuildIndex::default();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.starts_with('#'))
        {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 4 {
                return Err(format!("line {}: {} fields", n + 1, f.len()));
            }
            let target = match f[2].strip_prefix("module:") {
                Some(m) => Target::Module(m.to_string()),
                None if f[2] == "vmlinux" => Target::Vmlinux,
                None => return Err(format!("line {}: target {}", n + 1, f[2])),
            };
            index.push(IndexedObject {
                object: f[0].into(),
                source: f[1].into(),
                target,
                include_dirs: f[3].split_whitespace().map(str::to_string).collect(),
            });
        }
        if index.objects.is_empty() {
            return Err("empty".into());
        }
        Ok(index)
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether no object is indexed.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Every compiled object, in the order of the build.
    pub fn objects(&self) -> impl Iterator<Item = &IndexedObject> {
        self.objects.iter()
    }

    /// The object compiled from a C file, if this configuration builds it.
    pub fn by_source(&self, source: &str) -> Option<&IndexedObject> {
        self.by_source.get(source).map(|&i| &self.objects[i])
    }

    /// Every object whose C file includes `header` (relative to the tree),
    /// directly or through other headers. Includes named by macros
    /// (`#include TRACE_INCLUDE(...)`) are not followed.
    pub fn dependents(&self, tree: &Path, header: &str) -> Vec<&IndexedObject> {
        let mut scanner = IncludeScanner {
            tree,
            direct: HashMap::new(),
        };
        let target = PathBuf::from(header);
        // Memoized per (file, include path); most objects share one
        // include path, so paths are numbered once instead of cloned into
        // every key.
        let mut paths: HashMap<&[String], usize> = HashMap::new();
        let mut memo: HashMap<(PathBuf, usize), bool> = HashMap::new();
        self.objects
            .iter()
            .filter(|o| {
                let n = paths.len();
                let path_id = *paths.entry(o.include_dirs.as_slice()).or_insert(n);
                scanner.reaches(
                    Path::new(&o.source),
                    &o.include_dirs,
                    path_id,
                    &target,
                    &mut memo,
                    &mut HashSet::new(),
                )
            })
            .collect()
    }
}

/// Follows `#include` lines through a tree, memoizing each file's direct
/// includes.
struct IncludeScanner<'a> {
    tree: &'a Path,
    direct: HashMap<PathBuf, Vec<(bool, String)>>,
}

impl IncludeScanner<'_> {
    /// The `#include` lines of a file: (quoted, name).
    fn includes(&mut self, file: &Path) -> &[(bool, String)] {
        if !self.direct.contains_key(file) {
            let text = std::fs::read(self.tree.join(file)).unwrap_or_default();
            let mut v = Vec::new();
            for line in String::from_utf8_lossy(&text).lines() {
                let l = line.trim_start();
                let Some(rest) = l.strip_prefix('#') else {
                    continue;
                };
                let Some(rest) = rest.trim_start().strip_prefix("include") else {
                    continue;
                };
                let rest = rest.trim();
                if let Some(r) = rest.strip_prefix('<') {
                    if let Some(end) = r.find('>') {
                        v.push((false, r[..end].to_string()));
                    }
                } else if let Some(r) = rest.strip_prefix('"') {
                    if let Some(end) = r.find('"') {
                        v.push((true, r[..end].to_string()));
                    }
                }
            }
            self.direct.insert(file.to_path_buf(), v);
        }
        &self.direct[file]
    }

    fn resolve(&self, from: &Path, quoted: bool, name: &str, dirs: &[String]) -> Option<PathBuf> {
        let mut candidates = Vec::new();
        if quoted {
            candidates.push(from.parent().unwrap_or(Path::new("")).join(name));
        }
        for d in dirs {
            candidates.push(Path::new(d).join(name));
        }
        candidates
            .into_iter()
            .map(|p| normalize(&p))
            .find(|p| self.tree.join(p).is_file())
    }

    /// Whether `file` includes `target`, transitively, through include
    /// path `dirs` (numbered `path_id`). Files already on the current path
    /// count as not reaching (include guards end cycles).
    fn reaches(
        &mut self,
        file: &Path,
        dirs: &[String],
        path_id: usize,
        target: &Path,
        memo: &mut HashMap<(PathBuf, usize), bool>,
        visiting: &mut HashSet<PathBuf>,
    ) -> bool {
        let key = (file.to_path_buf(), path_id);
        if let Some(&r) = memo.get(&key) {
            return r;
        }
        if !visiting.insert(file.to_path_buf()) {
            return false;
        }
        let includes = self.includes(file).to_vec();
        let mut found = false;
        for (quoted, name) in includes {
            let Some(path) = self.resolve(file, quoted, &name, dirs) else {
                continue;
            };
            if path == target || self.reaches(&path, dirs, path_id, target, memo, visiting) {
                found = true;
                break;
            }
        }
        visiting.remove(file);
        memo.insert(key, found);
        found
    }
}

/// `a/b/../c` → `a/c`, `./x` → `x`.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The module a compile command builds for: kbuild's
/// `-DKBUILD_MODNAME='"name"'`, else its token form `-D__KBUILD_MODNAME=`,
/// which up to 6.12 carries a `kmod_` prefix (`kmod_nfsd`) and from 6.13
/// none (`nfsd`).
fn module_name(words: &[&str]) -> Option<String> {
    let quoted = words.iter().find_map(|w| {
        let name = w
            .strip_prefix("-DKBUILD_MODNAME=")?
            .trim_matches(|c| c == '\'' || c == '"' || c == '\\');
        (!name.is_empty()).then(|| name.to_string())
    });
    quoted.or_else(|| {
        words.iter().find_map(|w| {
            let token = w.strip_prefix("-D__KBUILD_MODNAME=")?;
            Some(token.strip_prefix("kmod_").unwrap_or(token).to_string())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_of_every_kbuild() {
        // 6.1 and 6.12: both forms, the token with its kmod_ prefix.
        let old = "gcc-12 -DMODULE -DKBUILD_MODNAME='\"mlx5_core\"' -D__KBUILD_MODNAME=kmod_mlx5_core -c -o x.o x.c";
        // 7.x: the token without it.
        let new = "x86_64-linux-gnu-gcc-14 -DMODULE -DKBUILD_BASENAME='\"nfs4proc\"' -DKBUILD_MODNAME='\"nfsd\"' -D__KBUILD_MODNAME=nfsd -c -o fs/nfsd/nfs4proc.o fs/nfsd/nfs4proc.c";
        let token_only = "gcc -DMODULE -D__KBUILD_MODNAME=nfsd -c -o a.o a.c";
        let words = |l: &'static str| l.split_whitespace().collect::<Vec<_>>();
        assert_eq!(module_name(&words(old)).as_deref(), Some("mlx5_core"));
        assert_eq!(module_name(&words(new)).as_deref(), Some("nfsd"));
        assert_eq!(module_name(&words(token_only)).as_deref(), Some("nfsd"));
        let i = BuildIndex::from_dry_run(new);
        assert_eq!(
            i.by_source("fs/nfsd/nfs4proc.c").unwrap().target,
            Target::Module("nfsd".into())
        );
        // An index of the older format is not trusted.
        assert!(BuildIndex::parse(
            "# object\tsource\ttarget\tinclude dirs\nfs/a.o\tfs/a.c\tvmlinux\t\n"
        )
        .is_err());
    }

    #[test]
    fn dry_run_lines() {
        let text = "\
  gcc-12 -Wp,-MMD,fs/ext4/.super.o.d -nostdinc -I./arch/x86/include -I ./include -DKBUILD_MODNAME='\"ext4\"' -D__KBUILD_MODNAME=kmod_ext4 -c -o fs/ext4/super.o fs/ext4/super.c  ; ./tools/objtool/objtool
  gcc-12 -Wp,-MMD,drivers/net/.virtio_net.o.d -nostdinc -I./include -I drivers/net -DMODULE -DKBUILD_MODNAME='\"virtio_net\"' -D__KBUILD_MODNAME=kmod_virtio_net -c -o drivers/net/virtio_net.o drivers/net/virtio_net.c
  printf '%s\\n' 'cmd_fs/ext4/super.o := gcc-12 -c -o fs/ext4/super.o fs/ext4/super.c' > fs/ext4/.super.o.cmd
  gcc-12 -c -o arch/x86/entry/entry_64.o arch/x86/entry/entry_64.S
  gcc-12 -I./include -DMODULE -D__KBUILD_MODNAME=kmod_kvm -c -o arch/x86/kvm/../../../virt/kvm/dirty_ring.o arch/x86/kvm/../../../virt/kvm/dirty_ring.c
";
        let i = BuildIndex::from_dry_run(text);
        assert_eq!(i.len(), 3);
        // A file built through another directory's Makefile: found by its
        // place in the tree, compiled under the name kbuild knows.
        let kvm = i.by_source("virt/kvm/dirty_ring.c").unwrap();
        assert_eq!(kvm.object, "arch/x86/kvm/../../../virt/kvm/dirty_ring.o");
        let ext4 = i.by_source("fs/ext4/super.c").unwrap();
        assert_eq!(ext4.target, Target::Vmlinux);
        assert_eq!(ext4.include_dirs, ["arch/x86/include", "include"]);
        let v = i.by_source("drivers/net/virtio_net.c").unwrap();
        assert_eq!(v.target, Target::Module("virtio_net".into()));
        assert_eq!(v.object, "drivers/net/virtio_net.o");
        let again = BuildIndex::parse(&i.serialize()).unwrap();
        assert_eq!(again.objects, i.objects);
    }

    #[test]
    fn header_dependents_follow_includes() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        for (p, c) in [
            ("include/linux/a.h", "#include <linux/b.h>\n"),
            (
                "include/linux/b.h",
                "#include \"c.h\"\n#include <linux/a.h>\n",
            ),
            ("include/linux/c.h", "int c;\n"),
            ("kernel/x.c", "#include <linux/a.h>\n"),
            ("kernel/y.c", "# include \"local.h\"\n"),
            ("kernel/local.h", "#include <linux/c.h>\n"),
            ("kernel/z.c", "int z;\n"),
        ] {
            std::fs::create_dir_all(t.join(p).parent().unwrap()).unwrap();
            std::fs::write(t.join(p), c).unwrap();
        }
        let mut i = BuildIndex::default();
        for s in ["kernel/x.c", "kernel/y.c", "kernel/z.c"] {
            i.push(IndexedObject {
                object: s.replace(".c", ".o"),
                source: s.into(),
                target: Target::Vmlinux,
                include_dirs: vec!["include".into()],
            });
        }
        let names = |h: &str| -> Vec<String> {
            i.dependents(t, h)
                .iter()
                .map(|o| o.source.clone())
                .collect()
        };
        assert_eq!(names("include/linux/c.h"), ["kernel/x.c", "kernel/y.c"]);
        assert_eq!(names("include/linux/a.h"), ["kernel/x.c"]);
        assert_eq!(names("kernel/local.h"), ["kernel/y.c"]);
        assert!(names("include/linux/none.h").is_empty());
    }
}
