//! Shared code for the benchmarks in `benches/benches/` (the load-test harness will live here).
