int state;
int work(int v) { return v + state; }
