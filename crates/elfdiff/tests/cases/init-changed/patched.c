//# outcome: no-change
//# changed: setup
//# not-carried: setup: init-code: ran once, at boot
//# strict-refused: setup: not carried (init-code)
__attribute__((section(".init.text"))) int setup(int v) { return v * 4; }
