int limit = 5;
int get(void) { return limit; }
