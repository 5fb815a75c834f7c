__attribute__((no_instrument_function)) int raw(int v) { return v ^ 5; }
