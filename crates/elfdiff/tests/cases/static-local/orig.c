int first(void) { static int hits; return ++hits; }
int second(void) { static int hits; return hits += 2; }
