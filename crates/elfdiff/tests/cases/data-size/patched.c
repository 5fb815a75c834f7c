//# outcome: refused
//# refused: table: data size changed from 16 to 20 bytes
//# changed: get
int table[5];
int get(int i) { return table[i % 5]; }
