/* A call-graph profile (what clang writes from PGO data) is
 * SHT_LLVM_CALL_GRAPH_PROFILE with REL relocations, on x86-64 too. */
int leaf(int x) { return x + 1; }
int hot(int x) { asm(".cg_profile hot, leaf, 1000"); return leaf(x) * 2; }
