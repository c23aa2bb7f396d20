//! Feeds arbitrary bytes to the `static` validation stage: it must never panic, and a
//! module it calls valid must also pass wasmparser's own validator.
#![no_main]

use caxton_validate::policy::Policy;
use caxton_validate::{engine_features, static_stage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_, facts) = static_stage::check(data, &Policy::default(), engine_features());
    if facts.valid {
        let mut validator = wasmparser::Validator::new_with_features(engine_features());
        assert!(validator.validate_all(data).is_ok(), "the static stage accepted an invalid module");
    }
});
