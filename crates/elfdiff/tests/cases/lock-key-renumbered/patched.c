//# outcome: changed
//# changed: setup_two
//# data-new: __key.N
//# klp: __key.0
struct lock_class_key { };
struct mutex { int owner; };
extern void __mutex_init(struct mutex *lock, const char *name, struct lock_class_key *key);
#define mutex_init(m) do { static struct lock_class_key __key; __mutex_init((m), #m, &__key); } while (0)
struct dev { struct mutex a, b, c, d; };
void setup_one(struct dev *d) { mutex_init(&d->a); mutex_init(&d->b); }
void setup_two(struct dev *d) { mutex_init(&d->c); mutex_init(&d->d); }
