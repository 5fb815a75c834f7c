//# outcome: refused
//# changed: setup
//# refused: setup: changed .init.text code
__attribute__((section(".init.text"))) int setup(int v) { return v * 4; }
