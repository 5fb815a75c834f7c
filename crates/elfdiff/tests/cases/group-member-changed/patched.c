//# outcome: changed
//# changed: grp_fn
/* Same signature, kind and members in both objects: the group does not
   stop the changed function inside it from being carried. The emitted
   object carries grp_fn in a section of its own outside any group: the
   output has no group section, so membership flags would dangle (the
   harness checks there are none, and that readelf and ld -r accept it). */
//# relocs: __mcount_loc .text.grp_fn
__attribute__((section(".text.grp_fn,\"axG\",@progbits,grp_fn,comdat#")))
int grp_fn(int v) { return v * 5; }
