/* User access before 4.14: a faulting instruction, its fixup in the
 * symbol-less .fixup section, and an 8-byte __ex_table entry (from, to),
 * both fields relocated into code. */
#define GET(dst, src) asm volatile("1:\tmovl %1, %0\n2:\n"		\
	".pushsection .fixup,\"ax\"\n3:\tmovl $-14, %0\n\tjmp 2b\n"	\
	".popsection\n"							\
	".pushsection __ex_table,\"a\"\n .balign 4\n"			\
	" .long 1b - .\n .long 3b - .\n.popsection\n"			\
	: "=r"(dst) : "m"(*(src)))
int read_a(int *p) { int v; GET(v, p); return v + 1; }
int read_b(int *p) { int v; GET(v, p); return v - 1; }
