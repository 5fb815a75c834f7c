//# outcome: refused
//# refused: limit: initial value of existing data changed
int limit = 6;
int get(void) { return limit; }
