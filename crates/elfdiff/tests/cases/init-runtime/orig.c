static int mode;
__attribute__((section(".init.text"))) int setup(int v) { mode = v * 2; return 0; }
int get_mode(void) { return mode; }
