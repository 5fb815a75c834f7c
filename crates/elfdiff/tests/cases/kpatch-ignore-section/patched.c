//# outcome: changed
//# changed: runtime
//# ignored: setup
//# note: boot_limits changed but its section .init.data is ignored by the patch author
/* What kpatch-macros.h expands KPATCH_IGNORE_SECTION(".init.text") to: a
 * pointer to the section name in .kpatch.ignore.sections. Changes there
 * are left out (here: init code and data, used at boot). */
#define PASTE2(a, b) a##b
#define PASTE(a, b) PASTE2(a, b)
#define KPATCH_IGNORE_SECTION(sec) \
	char *PASTE(__kpatch_ignore_section_, __COUNTER__) __attribute__((section(".kpatch.ignore.sections"))) = sec;
int setting;
__attribute__((section(".init.data"))) int boot_limits[2] = { 1, 3 };
__attribute__((section(".init.text"))) int setup(int v) { setting = v * boot_limits[1]; return 0; }
int runtime(int v) { return v + setting + 1; }
KPATCH_IGNORE_SECTION(".init.text")
KPATCH_IGNORE_SECTION(".init.data")
