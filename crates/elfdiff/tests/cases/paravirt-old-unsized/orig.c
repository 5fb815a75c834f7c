/* A paravirt patch site as 4.x and 5.x kernels (before 5.11) write it:
 * struct paravirt_patch_site { u8 *instr; u8 type; u8 len; u16 clobbers; }
 * is 16 bytes, but each entry is only aligned before it, so the last one
 * of an object is 12: the object cannot tell the stride. */
#define PV_SITE(type, insn) asm volatile("771:\n\t" insn "\n772:\n"	\
	".pushsection .parainstructions,\"a\"\n .balign 8\n .quad 771b\n"	\
	" .byte " #type "\n .byte 772b-771b\n .short 0x1ff\n.popsection\n"	\
	::: "memory")
extern void *pv_ops[4];
int counter;
void irq_off(void) { PV_SITE(1, "call *pv_ops+8"); counter++; }
void irq_on(void) { PV_SITE(2, "call *pv_ops+16"); counter--; }
