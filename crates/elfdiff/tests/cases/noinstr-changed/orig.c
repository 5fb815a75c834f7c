__attribute__((section(".noinstr.text"))) int enter(int v) { return v ^ 1; }
