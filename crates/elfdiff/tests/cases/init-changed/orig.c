__attribute__((section(".init.text"))) int setup(int v) { return v * 3; }
