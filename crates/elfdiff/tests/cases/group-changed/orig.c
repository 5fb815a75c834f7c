/* A COMDAT group made from C: gcc copies the section attribute verbatim
   after .section and appends its own flags, which the trailing '#'
   comments out. */
__attribute__((section(".text.grp_fn,\"axG\",@progbits,grp_fn,comdat#")))
int grp_fn(int v) { return v * 3; }
int other(int v) { return v + 7; }
