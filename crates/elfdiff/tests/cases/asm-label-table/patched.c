//# outcome: changed
//# changed: id_of
/* A table an assembler macro defines, as BTF_ID_LIST/BTF_SET do in
   .BTF_ids: its name is a label (STT_NOTYPE, no size), and code refers to
   it through the section symbol. */
asm(".pushsection .BTF_ids,\"a\"\n"
    ".local pad_list\npad_list:\n.zero 8\n"
    ".local id_list\nid_list:\n.zero 16\n"
    ".popsection\n");
extern unsigned int id_list[];
int id_of(int i) { return i < 4 ? id_list[i] + 2 : 0; }
