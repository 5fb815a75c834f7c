//# outcome: refused
//# changed: keyed
//# refused: keyed: section .text.keyed is in section group grp_key2, which changed: signature grp_key -> grp_key2
__attribute__((section(".text.keyed,\"axG\",@progbits,grp_key2#")))
int keyed(int v) { return v * 4; }
