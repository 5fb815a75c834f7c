//# outcome: changed
//# changed: runtime
//# ignored: setup
/* What kpatch-macros.h expands KPATCH_IGNORE_SECTION(".init.text") to: a
 * pointer to the section name in .kpatch.ignore.sections. Changes there
 * are left out (here: init code, which ran at boot). */
#define KPATCH_IGNORE_SECTION(sec) \
	char *__kpatch_ignore_section_##__LINE__ __attribute__((section(".kpatch.ignore.sections"))) = sec;
int setting;
__attribute__((section(".init.text"))) int setup(int v) { setting = v + 1; return 0; }
int runtime(int v) { return v + setting + 1; }
KPATCH_IGNORE_SECTION(".init.text")
