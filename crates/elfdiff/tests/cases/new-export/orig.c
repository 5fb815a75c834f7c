int existing(int v) { return v + 1; }
