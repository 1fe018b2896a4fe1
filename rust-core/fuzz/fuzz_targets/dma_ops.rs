//! Random DMA traffic among three guests, steered by the fuzzer, through the DMA engine: the same
//! model the unit tests use (`src/dma/fuzz_model.rs`). Any panic is a finding: a delivery that
//! copied other bytes than it reports, a refused valid descriptor, a leaked file reference, or a
//! panic inside lg-core itself.
#![no_main]

// The model names the engine relative to its parent module (`lg_core::dma` inside lg-core): here
// the crate root stands in for it.
pub use lg_core::dma::*;

#[path = "../../src/dma/fuzz_model.rs"]
mod fuzz_model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fuzz_model::run(data);
});
