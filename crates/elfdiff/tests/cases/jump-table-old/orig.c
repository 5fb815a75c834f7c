/* Jump labels before 5.0 (CONFIG_JUMP_LABEL, absolute entries):
 * struct jump_entry { u64 code, target, key; }, every field relocated, so
 * relocation offsets repeat every 8 bytes though an entry is 24. */
struct static_key { int enabled; };
extern struct static_key feature_on;
static inline __attribute__((always_inline)) int key_false(struct static_key *key)
{
	asm goto("1:\n\t.byte 0x0f,0x1f,0x44,0x00,0x00\n"
		 ".pushsection __jump_table, \"aw\"\n .balign 8\n"
		 " .quad 1b, %l[l_yes], %c0\n.popsection\n"
		 : : "i"(key) : : l_yes);
	return 0;
l_yes:
	return 1;
}
int counter;
int fast(int v) { if (key_false(&feature_on)) counter++; return v + 1; }
int slow(int v) { if (key_false(&feature_on)) counter--; return v * 3; }
