enum mode { MODE_A, MODE_B };
enum state { ST_IDLE, ST_BUSY };
int weight(enum mode m, enum state s) { return m == MODE_B ? 2 : s == ST_BUSY; }
