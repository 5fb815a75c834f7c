static const int weights[4] = { 1, 2, 3, 4 };
int weigh(int i) { return weights[i & 3]; }
int plain(int i) { return i; }
