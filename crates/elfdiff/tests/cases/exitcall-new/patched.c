//# outcome: no-change
//# new: rng_exit
//# not-carried: __exitcall_rng_exit: init-data: new .exitcall.exit data: init or exit machinery
//# not-carried: rng_exit: exit-code: new .exit.text code
//# strict-refused: rng_exit: not carried (exit-code)
/* A fix that adds a module_exit (crypto/rng.c, 6.1.170-3 -> 6.1.192-3):
 * the exit function is new .exit.text code and its entry in .exitcall.exit
 * new data; neither is carried (the kernel runs that table at module
 * unload, or never for built-in code), and the entry must not make the
 * patch refer to the function it leaves out. */
typedef void (*exitcall_t)(void);
int f(int v) { return v + 1; }
extern int crypto_del_default_rng(void);
__attribute__((section(".exit.text"))) static void rng_exit(void) { crypto_del_default_rng(); }
static exitcall_t __exitcall_rng_exit __attribute__((used, section(".exitcall.exit"))) = rng_exit;
