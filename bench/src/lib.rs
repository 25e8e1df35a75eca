//! Building blocks of the benchmark binary (`src/main.rs`): a loopback HTTP
//! load generator, statistics, the durable-write floor and `/proc` memory
//! figures. Nothing here runs under `cargo test` except the unit tests of
//! the helpers themselves; every figure comes from `scripts/bench.sh`.

pub mod disk;
pub mod load;
pub mod process;
pub mod stats;
