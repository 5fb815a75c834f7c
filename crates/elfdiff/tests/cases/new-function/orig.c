int check(int v) { return v > 10; }
