/* 4.x fast refcount (arch/x86/include/asm/refcount.h): the overflow
 * path lives in .text..refcount, code without symbols entered by a jump
 * from the function, with an exception-table entry (4.x layout: from, to,
 * handler, 12 bytes) from its ud2 back into the function. */
#define REFCOUNT_INC(counter) asm volatile("lock incl %0\n\tjs 111f\n"	\
	".pushsection .text..refcount\n111:\tlea %0, %%rcx\n112:\tud2\n"	\
	".popsection\n113:\n"						\
	".pushsection __ex_table,\"a\"\n .balign 4\n .long 112b - .\n"	\
	" .long 113b - .\n .long ex_handler_refcount - .\n.popsection\n"	\
	: "+m"(counter) :: "cc", "rcx")
struct obj { int refs; int data; };
void get_a(struct obj *o) { REFCOUNT_INC(o->refs); o->data++; }
void get_b(struct obj *o) { REFCOUNT_INC(o->refs); o->data--; }
