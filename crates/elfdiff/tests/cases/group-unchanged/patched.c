//# outcome: changed
//# changed: other
//# emit-error: Unsupported section type 11
/* The analysis carries it; emitting does not yet: object 0.37's
   object::build::elf cannot read SHT_GROUP (docs/elfdiff.md, Not yet). */
__attribute__((section(".text.grp_fn,\"axG\",@progbits,grp_fn,comdat#")))
int grp_fn(int v) { return v * 3; }
int other(int v) { return v + 8; }
