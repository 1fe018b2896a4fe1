//! Random guests and random operations, steered by the fuzzer, through shadow paging: the same
//! model the unit tests use (`src/shadow/tests/model.rs`), checked through the public API after
//! every operation. Any panic is a finding: an access the shadow allows but the guest's tables do
//! not, a wrong frame, a leaked pin or table page, or a panic inside lg-core itself.
#![no_main]

/// The model names everything through `crate::shadow`, as it does inside lg-core.
mod shadow {
    pub use lg_core::shadow::*;
}

#[path = "../../src/shadow/tests/model.rs"]
#[allow(dead_code)]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| model::fuzz_one(data));
