//! sympos against the real Debian 6.1 cloud kernel: the unstripped vmlinux
//! of the `-dbg` package, objects compiled from the workspace's source, and
//! the kernel's own System.map as the independent address order.

use std::collections::HashSet;

use elfdiff::read::{Object, SymKind};
use kernel_tree::source::DIFF_CFLAGS;
use kernel_tree::{AptArchive, Cache, Workspace};
use klp::{KernelSymbols, Symvers};

#[test]
#[ignore = "slow tier: needs the 6.1 kernel source and -dbg symbols; scripts/test runs it"]
fn sympos_of_duplicate_statics_follows_their_object_files() {
    let cache = Cache::from_env().unwrap();
    let archive = AptArchive::new();
    let ws = Workspace::fetch(&cache, &archive, &"6.1.0-47-cloud-amd64".parse().unwrap()).unwrap();
    let table = ws.symbols(&cache, &archive).unwrap();
    let started = std::time::Instant::now();
    let ksyms = KernelSymbols::from_vmlinux(&table.vmlinux).unwrap();
    eprintln!("{} symbols read in {:?}", ksyms.len(), started.elapsed());
    let map = KernelSymbols::from_system_map(
        &table.system_map,
        &std::fs::read_to_string(&table.system_map).unwrap(),
    )
    .unwrap();
    let tree = ws.source_tree(&cache, &archive).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Four static s_start functions: kallsyms.c, trace.c, trace_events.c, vmalloc.c.
    let map_addrs: Vec<u64> = map.named("s_start").map(|s| s.address).collect();
    assert_eq!(map_addrs.len(), 4, "{map_addrs:x?}");
    let mut seen = HashSet::new();
    for (object, file) in [
        ("kernel/kallsyms.o", "kallsyms.c"),
        ("mm/vmalloc.o", "vmalloc.c"),
        ("kernel/trace/trace.o", "trace.c"),
        ("kernel/trace/trace_events.o", "trace_events.c"),
    ] {
        let out = dir.path().join(file.replace(".c", ".o"));
        tree.compile(object, DIFF_CFLAGS, &out).unwrap();
        let obj = Object::read(&out).unwrap();
        let locals = klp::resolve::statics(&obj);
        let block = ksyms
            .find_object(file, &locals)
            .unwrap_or_else(|e| panic!("{object}: {e}"));
        let pos = ksyms.sympos("s_start", Some(block)).unwrap();
        assert!((1..=4).contains(&pos), "{object}: {pos}");
        let own = ksyms
            .named("s_start")
            .find(|s| s.block == Some(block))
            .unwrap()
            .address;
        assert_eq!(
            map_addrs[pos as usize - 1],
            own,
            "{object}: position {pos} in System.map order"
        );
        assert!(seen.insert(pos), "two objects got sympos {pos}");
    }
    assert_eq!(ksyms.sympos("cmdline_proc_show", None).unwrap(), 0);
    assert!(matches!(
        ksyms.sympos("s_start", None),
        Err(klp::Error::Ambiguous { count: 4, .. })
    ));

    // Many core.c files: the locals pick exactly one.
    let core = dir.path().join("core.o");
    tree.compile("kernel/sched/core.o", DIFF_CFLAGS, &core)
        .unwrap();
    let obj = Object::read(&core).unwrap();
    let locals: Vec<&str> = obj
        .symbols
        .iter()
        .filter(|s| s.is_local() && s.kind == SymKind::Func && s.section.is_some())
        .map(|s| s.name.as_str())
        .collect();
    let block = ksyms.find_object("core.c", &locals).unwrap();
    assert_eq!(ksyms.block_file(block), "core.c");
    assert_eq!(ksyms.sympos("__schedule", Some(block)).unwrap(), 0);

    let symvers = Symvers::read(&ws.module_symvers()).unwrap();
    assert!(symvers.exports("klp_enable_patch", "vmlinux"));
    assert!(symvers.get("cmdline_proc_show").is_none());
    assert!(symvers.len() > 10_000);
}
