//# cc: clang
//# outcome: changed
//# changed: limit_check
/* clang writes .llvm_addrsig (SHT_LLVM_ADDRSIG) into every object; the
 * builder the emit pass edits the object with does not know the type. */
static int hits;
static const char *names[] = { "a", "b" };
int limit_check(int v) { hits++; if (v >= 100) return -1; return v * 2; }
const char *name_of(int i) { return names[i & 1]; }
