/* A plain (non-COMDAT) group: "G" flag without ",comdat". */
__attribute__((section(".text.keyed,\"axG\",@progbits,grp_key#")))
int keyed(int v) { return v * 3; }
