/* kpatch's KPATCH_IGNORE_SECTION, see patched.c. */
int setting;
__attribute__((section(".init.text"))) int setup(int v) { setting = v; return 0; }
int runtime(int v) { return v + setting; }
