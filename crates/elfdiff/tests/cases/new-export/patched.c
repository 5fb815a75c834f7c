//# outcome: changed
//# changed: existing
//# new: helper
//# note: export of helper dropped
/* What EXPORT_SYMBOL(helper) expands to on 6.1, reduced. */
__attribute__((noinline)) int helper(int v) { return v * 2; }
static const char __kstrtab_helper[] __attribute__((section("__ksymtab_strings"), used)) = "helper";
const struct { int value_offset, name_offset, namespace_offset; } __ksymtab_helper
	__attribute__((section("___ksymtab+helper"), used)) = { 0, 0, 0 };
int existing(int v) { return helper(v) + 1; }
