//# outcome: changed
//# changed: other
/* The group around grp_fn is the same in both objects and the patch does
   not touch it: the emitted object carries other alone, with no group
   section and no section flagged a group member (the harness checks that,
   and that readelf and ld -r accept the output). */
//# special: __mcount_loc 1/2
//# relocs: __mcount_loc .text.other
__attribute__((section(".text.grp_fn,\"axG\",@progbits,grp_fn,comdat#")))
int grp_fn(int v) { return v * 3; }
int other(int v) { return v + 8; }
