__attribute__((section(".sched.text"), noinline)) int wait_a(int v) { return v + 1; }
__attribute__((section(".sched.text"), noinline)) int wait_b(int v) { return v * 5; }
int user(int v) { return wait_a(v) + wait_b(v); }
