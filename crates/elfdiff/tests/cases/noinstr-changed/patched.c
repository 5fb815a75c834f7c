//# outcome: refused
//# changed: enter
//# refused: enter: noinstr/entry
__attribute__((section(".noinstr.text"))) int enter(int v) { return v ^ 2; }
