//! The load tests: the load generator ([`load`], also the `portcullis-load` tool) and the
//! harness (`target/release/portcullis-benches --quick|--full`), which measures the
//! gateway against a plain reverse proxy. Micro-benchmarks are in `benches/benches/`.

pub mod load;
