/* kpatch's KPATCH_IGNORE_SECTION, see patched.c. */
int setting;
__attribute__((section(".init.data"))) int boot_limits[2] = { 1, 2 };
__attribute__((section(".init.text"))) int setup(int v) { setting = v + boot_limits[1]; return 0; }
int runtime(int v) { return v + setting; }
