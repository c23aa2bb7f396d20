//! Module bytes through the `static` validation stage: it never panics, and a module it
//! calls valid also passes wasmparser's own validator.

use caxton_validate::policy::Policy;
use caxton_validate::{engine_features, static_stage};

pub(crate) fn check(data: &[u8]) {
    let (_, facts) = static_stage::check(data, &Policy::default(), engine_features());
    if facts.valid {
        let mut validator = wasmparser::Validator::new_with_features(engine_features());
        assert!(
            validator.validate_all(data).is_ok(),
            "the static stage accepted an invalid module"
        );
    }
}
