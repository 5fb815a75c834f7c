/* A new enumerator at the end keeps every stored value's meaning; one
 * inserted before others renumbers them (values the running kernel stored
 * would change meaning): refused. */
//# cflags: -g
//# outcome: refused
//# changed: weight
//# refused: enum state: layout changed (enumerators renumbered: ST_BUSY 1 -> 2)
enum mode { MODE_A, MODE_B, MODE_C };
enum state { ST_IDLE, ST_NEW, ST_BUSY };
int weight(enum mode m, enum state s) { return m == MODE_C ? 3 : m == MODE_B ? 2 : s == ST_BUSY; }
