//! The console backend: every domain's console ring printed with a `[d<id> <name>] ` prefix.
