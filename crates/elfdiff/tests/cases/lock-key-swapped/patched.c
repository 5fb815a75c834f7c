//# outcome: changed
//# changed: setup
//# klp: __key.0 __key.1
struct lock_class_key { };
struct mutex { int owner; };
extern void __mutex_init(struct mutex *lock, const char *name, struct lock_class_key *key);
#define mutex_init(m) do { static struct lock_class_key __key; __mutex_init((m), #m, &__key); } while (0)
struct dev { struct mutex a, b; int ready; };
void setup(struct dev *d) { mutex_init(&d->b); mutex_init(&d->a); }
