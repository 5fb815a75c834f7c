//# outcome: changed
//# changed: setup get_mode
//# not-carried: setup: init-code: the state it sets up in mode
//# strict-refused: setup: not carried (init-code)
static int mode;
__attribute__((section(".init.text"))) int setup(int v) { mode = v * 4; return 0; }
int get_mode(void) { return mode + 1; }
