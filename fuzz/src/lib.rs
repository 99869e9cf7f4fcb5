//! The OneRec fuzzer as a library: the targets, the mutations and the run loop, used by
//! the `onerec-fuzz` program (long runs) and by the test suite (`tests/fuzz.rs`, the
//! short run CI does). docs/FUZZING.md says what kind of fuzzer this is.

pub mod mutate;
pub mod rng;
pub mod runner;
pub mod targets;

pub use runner::{fuzz, Options, Stats};
pub use targets::Target;
