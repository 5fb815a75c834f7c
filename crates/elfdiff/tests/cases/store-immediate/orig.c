/* Stores of an immediate into static data: the reference's addend is the
   variable's offset - 5 (movb) or - 8 (movl), not - 4, because the
   immediate follows the displacement. */
static char armed;
static int limit;
void arm(int v) { armed = 1; limit = 100; if (v) armed = 2; }
int armed_limit(void) { return armed ? limit : 0; }
