//! Load-test harness (see benches/README.md). Micro-benchmarks live in `benches/benches/`.
