/* Alternatives written the way the kernel's ALTERNATIVE macro writes them
   (arch/x86/include/asm/alternative.h, 6.1): the original instruction at
   661 in the function, an .altinstructions entry (site, replacement,
   feature, lengths), the replacement at 6641 in .altinstr_replacement.
   Both functions' replacements share that one section; alt_g's comes
   first. */
#define ALT(oldinstr, newinstr, feature)                                \
	"661:\n\t" oldinstr "\n662:\n"                                  \
	".pushsection .altinstructions,\"a\"\n"                         \
	" .long 661b - .\n"                                             \
	" .long 6641f - .\n"                                            \
	" .word " #feature "\n"                                         \
	" .byte 662b - 661b\n"                                          \
	" .byte 6651f - 6641f\n"                                        \
	".popsection\n"                                                 \
	".pushsection .altinstr_replacement, \"ax\"\n"                  \
	"6641:\n\t" newinstr "\n6651:\n"                                \
	".popsection\n"

int alt_g(int v)
{
	int r;
	asm volatile(ALT("movl $0x20202020, %%eax\n\tcall g_old_target",
			 "movl $0x22222222, %%eax\n\tcall g_alt_target", 0x75)
		     : "=a"(r) : : "memory");
	return r + v;
}

int alt_f(int v)
{
	int r;
	asm volatile(ALT("movl $0x10101010, %%eax\n\tcall f_old_target",
			 "movl $0x11111111, %%eax\n\tcall f_alt_target\n\tjmp 662b", 0x76)
		     : "=a"(r) : : "memory");
	return r + v;
}
