int table[4];
int get(int i) { return table[i & 3]; }
