//! Keel's end-to-end tests (`tests/`) and benchmarks (`benches/`): real
//! Temporal dev servers, every Keel process and the scripted fake model, on
//! free loopback ports. What they run on is in `keel-test-support`; this
//! crate has no code of its own.
