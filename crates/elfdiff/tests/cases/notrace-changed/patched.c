//# outcome: refused
//# changed: raw
//# refused: raw: has no fentry call
__attribute__((no_instrument_function)) int raw(int v) { return v ^ 6; }
