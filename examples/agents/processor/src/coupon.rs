//! Coupons: the codes the shop honours, and how each release reads them from an order.

use std::borrow::Cow;

use serde::Deserialize;

/// The discount in cents that coupon `code` gives on `subtotal_cents`, or `None` when the
/// shop does not know the code. Discounts round down and never exceed the subtotal.
pub(crate) fn discount_cents(code: &str, subtotal_cents: u64) -> Option<u64> {
    match code {
        "SAVE10" => Some(subtotal_cents / 10),
        "SAVE25" => Some(subtotal_cents / 4),
        "FLAT500" => Some(subtotal_cents.min(500)),
        _ => None,
    }
}

/// Something an order's `coupon` field deserialises into, holding the coupon's code.
pub(crate) trait CouponCode {
    fn code(&self) -> &str;
}

impl CouponCode for String {
    fn code(&self) -> &str {
        self
    }
}

impl CouponCode for Cow<'_, str> {
    fn code(&self) -> &str {
        self
    }
}

/// v2's coupon: the structured form `{"code": "SAVE10"}` that a new checkout was going to
/// send.
///
/// THE v2 REGRESSION. The refactor that introduced this type replaced v1's plain-string
/// coupon (`"coupon": "SAVE10"`, which every client sends today) instead of accepting both
/// forms. Serde now refuses every order carrying a string coupon, and v2 replies
/// `{"kind":"error","reason":"malformed order: invalid type: string \"SAVE10\", expected
/// struct Coupon at line 1 column …"}` to them. Orders without a coupon are priced exactly
/// as v1 prices them, so a test suite that forgot coupons passes, and only live traffic,
/// where roughly one order in six carries one, shows the error rate climbing: this is what
/// the canary's `error_rate > 1%` gate is for.
#[derive(Debug, Deserialize)]
pub(crate) struct Coupon {
    code: String,
}

impl CouponCode for Coupon {
    fn code(&self) -> &str {
        &self.code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentage_coupons_round_down() {
        assert_eq!(discount_cents("SAVE10", 2500), Some(250));
        assert_eq!(discount_cents("SAVE10", 99), Some(9));
        assert_eq!(discount_cents("SAVE25", 1001), Some(250));
    }

    #[test]
    fn flat_coupon_never_exceeds_the_subtotal() {
        assert_eq!(discount_cents("FLAT500", 2000), Some(500));
        assert_eq!(discount_cents("FLAT500", 120), Some(120));
    }

    #[test]
    fn unknown_and_differently_cased_codes_give_nothing() {
        assert_eq!(discount_cents("SAVE99", 1000), None);
        assert_eq!(discount_cents("save10", 1000), None);
    }
}
