//# outcome: refused
//# changed: grp_fn
//# data-new: grp_state
//# refused: grp_fn: section .text.grp_fn is in COMDAT section group grp_fn, which changed: members added .data.grp_state
//# refused: grp_state: section .data.grp_state is in COMDAT section group grp_fn, which changed
__attribute__((section(".data.grp_state,\"awG\",@progbits,grp_fn,comdat#")))
int grp_state = 5;
__attribute__((section(".text.grp_fn,\"axG\",@progbits,grp_fn,comdat#")))
int grp_fn(int v) { return v * 5 + grp_state; }
int other(int v) { return v + 7; }
