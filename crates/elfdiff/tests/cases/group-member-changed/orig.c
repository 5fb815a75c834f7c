__attribute__((section(".text.grp_fn,\"axG\",@progbits,grp_fn,comdat#")))
int grp_fn(int v) { return v * 3; }
