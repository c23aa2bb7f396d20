//! Parsing, checking and pricing an order, and writing the reply, for each release.

use std::borrow::Cow;
use std::fmt;

use caxton_agent::{Level, error_reply, log};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::coupon::{Coupon, CouponCode, discount_cents};

/// A release of the processor; see the crate docs for what sets them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Release {
    /// The release in production.
    V1,
    /// The coupon refactor: refuses plain-string coupons (the regression) and logs an
    /// audit line per order; otherwise byte-identical to v1. See `Coupon` in `coupon.rs`.
    V2,
    /// The shadow candidate: borrows instead of copying, writes receipt fields in another
    /// order; equal to v1 after JSON normalisation.
    V3,
}

/// Answers one message as `release` does: a `receipt` or an `error` reply.
pub fn process(release: Release, message: &[u8]) -> Vec<u8> {
    let outcome = match release {
        Release::V1 => price::<String, String>(release, message),
        Release::V2 => price::<String, Coupon>(release, message),
        Release::V3 => price::<Text<'_>, Text<'_>>(release, message),
    };
    outcome.unwrap_or_else(|reason| error_reply(&reason))
}

/// Just enough of a message to see its kind; other fields are skipped.
#[derive(Deserialize)]
struct Envelope<S> {
    kind: S,
}

/// An order, with strings of type `S` and a coupon of type `C` (which differ by release).
#[derive(Deserialize)]
struct Order<S, C> {
    id: S,
    items: Vec<Item<S>>,
    coupon: Option<C>,
}

#[derive(Deserialize)]
struct Item<S> {
    sku: S,
    qty: u32,
    price_cents: u64,
}

/// v1's and v2's receipt, fields in the order clients have always seen.
#[derive(Serialize)]
struct Receipt<'a> {
    kind: &'static str,
    id: &'a str,
    total_cents: u64,
    items: usize,
    discount_cents: u64,
}

/// v3's receipt: the same fields, written in another order.
#[derive(Serialize)]
struct ReceiptV3<'a> {
    kind: &'static str,
    id: &'a str,
    items: usize,
    discount_cents: u64,
    total_cents: u64,
}

fn price<'a, S, C>(release: Release, message: &'a [u8]) -> Result<Vec<u8>, String>
where
    S: Deserialize<'a> + AsRef<str>,
    C: Deserialize<'a> + CouponCode,
{
    if !starts_as_object(message) {
        return Err("malformed message: expected a JSON object".into());
    }
    let envelope: Envelope<S> =
        serde_json::from_slice(message).map_err(|error| format!("malformed message: {error}"))?;
    let kind = envelope.kind.as_ref();
    if kind != "order" {
        return Err(format!(
            "unsupported kind `{kind}`: processor accepts `order`"
        ));
    }
    let order: Order<S, C> =
        serde_json::from_slice(message).map_err(|error| format!("malformed order: {error}"))?;

    let id = order.id.as_ref();
    if id.is_empty() {
        return Err("order has an empty `id`".into());
    }
    if order.items.is_empty() {
        return Err(format!("order `{id}` has no items"));
    }
    let mut subtotal_cents: u64 = 0;
    for (index, item) in order.items.iter().enumerate() {
        let sku = item.sku.as_ref();
        if sku.is_empty() {
            return Err(format!("order `{id}` item {index}: `sku` is empty"));
        }
        if item.qty == 0 {
            return Err(format!(
                "order `{id}` item {index} (`{sku}`): `qty` must be at least 1"
            ));
        }
        subtotal_cents = item
            .price_cents
            .checked_mul(u64::from(item.qty))
            .and_then(|line| subtotal_cents.checked_add(line))
            .ok_or_else(|| format!("order `{id}`: total overflows"))?;
    }
    let discount_cents = match &order.coupon {
        None => 0,
        Some(coupon) => {
            let code = coupon.code();
            discount_cents(code, subtotal_cents)
                .ok_or_else(|| format!("order `{id}`: unknown coupon `{code}`"))?
        }
    };
    let total_cents = subtotal_cents - discount_cents;
    let items = order.items.len();

    let reply = match release {
        Release::V1 | Release::V2 => serde_json::to_vec(&Receipt {
            kind: "receipt",
            id,
            total_cents,
            items,
            discount_cents,
        }),
        Release::V3 => serde_json::to_vec(&ReceiptV3 {
            kind: "receipt",
            id,
            items,
            discount_cents,
            total_cents,
        }),
    };
    if release == Release::V2 {
        // v2's audit trail: one line per order listing every line item.
        let lines: Vec<String> = order
            .items
            .iter()
            .map(|item| format!("{}x{}@{}", item.qty, item.sku.as_ref(), item.price_cents))
            .collect();
        log(
            Level::Debug,
            &format!(
                "priced order `{id}`: {} = {subtotal_cents} - {discount_cents}",
                lines.join(" + ")
            ),
        );
    }
    reply.map_err(|error| format!("could not write the receipt of order `{id}`: {error}"))
}

/// Whether the first byte after JSON whitespace opens an object (serde would otherwise read
/// a struct from an array too).
fn starts_as_object(message: &[u8]) -> bool {
    message
        .iter()
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'{')
}

/// A JSON string borrowed from the message when it has no escapes, copied when it has.
///
/// Reports type errors exactly as `String` does ("expected a string"), so v3's error
/// replies are v1's.
pub(crate) struct Text<'a>(Cow<'a, str>);

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl CouponCode for Text<'_> {
    fn code(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Cow<'de, str>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(text))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(text.to_owned()))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(text))
            }
        }

        deserializer.deserialize_string(TextVisitor).map(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const EXAMPLE: &str = r#"{"kind":"order","id":"o-17","items":[{"sku":"A1","qty":2,"price_cents":1250}],"coupon":"SAVE10"}"#;

    fn reply(release: Release, message: &str) -> String {
        String::from_utf8(process(release, message.as_bytes())).unwrap()
    }

    fn reason(release: Release, message: &str) -> String {
        let value: Value = serde_json::from_str(&reply(release, message)).unwrap();
        assert_eq!(
            value["kind"], "error",
            "expected an error reply to {message}"
        );
        value["reason"].as_str().unwrap().to_owned()
    }

    #[test]
    fn v1_prices_the_example_order() {
        assert_eq!(
            reply(Release::V1, EXAMPLE),
            r#"{"kind":"receipt","id":"o-17","total_cents":2250,"items":1,"discount_cents":250}"#
        );
    }

    #[test]
    fn v3_writes_the_same_receipt_with_fields_in_another_order() {
        let v3 = reply(Release::V3, EXAMPLE);
        assert_eq!(
            v3,
            r#"{"kind":"receipt","id":"o-17","items":1,"discount_cents":250,"total_cents":2250}"#
        );
        assert_ne!(v3, reply(Release::V1, EXAMPLE));
        assert_eq!(
            serde_json::from_str::<Value>(&v3).unwrap(),
            serde_json::from_str::<Value>(&reply(Release::V1, EXAMPLE)).unwrap()
        );
    }

    #[test]
    fn v2_refuses_string_coupons() {
        let reason = reason(Release::V2, EXAMPLE);
        assert!(
            reason.starts_with(
                r#"malformed order: invalid type: string "SAVE10", expected struct Coupon"#
            ),
            "{reason}"
        );
    }

    #[test]
    fn v2_prices_structured_coupons_as_v1_prices_string_ones() {
        let structured = EXAMPLE.replace(r#""SAVE10""#, r#"{"code":"SAVE10"}"#);
        assert_eq!(reply(Release::V2, &structured), reply(Release::V1, EXAMPLE));
    }

    #[test]
    fn v2_logs_an_audit_line_per_order() {
        caxton_agent::host::take_logs();
        let order = r#"{"kind":"order","id":"o-2","items":[{"sku":"A1","qty":2,"price_cents":100},{"sku":"B2","qty":1,"price_cents":50}]}"#;
        reply(Release::V2, order);
        let logs = caxton_agent::host::take_logs();
        assert_eq!(logs.len(), 1);
        assert_eq!(
            logs[0].message,
            "priced order `o-2`: 2xA1@100 + 1xB2@50 = 250 - 0"
        );
        reply(Release::V1, order);
        assert!(caxton_agent::host::take_logs().is_empty());
    }

    #[test]
    fn every_coupon_is_applied() {
        let order = |coupon: &str| {
            format!(
                r#"{{"kind":"order","id":"c","items":[{{"sku":"X","qty":3,"price_cents":700}}],"coupon":"{coupon}"}}"#
            )
        };
        for (coupon, discount) in [("SAVE10", 210), ("SAVE25", 525), ("FLAT500", 500)] {
            let value: Value = serde_json::from_str(&reply(Release::V1, &order(coupon))).unwrap();
            assert_eq!(value["discount_cents"], discount, "{coupon}");
            assert_eq!(value["total_cents"], 2100 - discount, "{coupon}");
        }
        assert_eq!(
            reason(Release::V1, &order("BOGUS")),
            "order `c`: unknown coupon `BOGUS`"
        );
    }

    #[test]
    fn malformed_messages_get_reasons_that_say_what_is_wrong() {
        let cases = [
            ("", "malformed message: expected a JSON object"),
            ("not json", "malformed message: expected a JSON object"),
            (r#"["order"]"#, "malformed message: expected a JSON object"),
            (
                "{",
                "malformed message: EOF while parsing an object at line 1 column 1",
            ),
            (
                r#"{"id":"o"}"#,
                "malformed message: missing field `kind` at line 1 column 10",
            ),
            (
                r#"{"kind":"refund"}"#,
                "unsupported kind `refund`: processor accepts `order`",
            ),
            (
                r#"{"kind":"order","id":"o"}"#,
                "malformed order: missing field `items` at line 1 column 25",
            ),
            (
                r#"{"kind":"order","id":"","items":[]}"#,
                "order has an empty `id`",
            ),
            (
                r#"{"kind":"order","id":"o","items":[]}"#,
                "order `o` has no items",
            ),
            (
                r#"{"kind":"order","id":"o","items":[{"sku":"","qty":1,"price_cents":1}]}"#,
                "order `o` item 0: `sku` is empty",
            ),
            (
                r#"{"kind":"order","id":"o","items":[{"sku":"A","qty":0,"price_cents":1}]}"#,
                "order `o` item 0 (`A`): `qty` must be at least 1",
            ),
            (
                r#"{"kind":"order","id":"o","items":[{"sku":"A","qty":-1,"price_cents":1}]}"#,
                "malformed order: invalid value: integer `-1`, expected u32 at line 1 column 53",
            ),
            (
                r#"{"kind":"order","id":"o","items":[{"sku":"A","qty":4294967295,"price_cents":18446744073709551615}]}"#,
                "order `o`: total overflows",
            ),
        ];
        for release in [Release::V1, Release::V2, Release::V3] {
            for (message, expected) in cases {
                assert_eq!(
                    reason(release, message),
                    expected,
                    "{release:?} on {message}"
                );
            }
        }
    }

    #[test]
    fn escaped_strings_are_read_by_every_release() {
        let order = r#"{"kind":"ord\u0065r","id":"o-\"q\"","items":[{"sku":"A\\1","qty":1,"price_cents":5}]}"#;
        for release in [Release::V1, Release::V3] {
            let value: Value = serde_json::from_str(&reply(release, order)).unwrap();
            assert_eq!(value["id"], r#"o-"q""#, "{release:?}");
            assert_eq!(value["total_cents"], 5, "{release:?}");
        }
    }

    /// Well-formed orders, with or without a known string coupon.
    fn valid_order() -> impl Strategy<Value = String> {
        let item = ("[A-Z0-9]{1,4}", 1u32..5, 0u64..100_000)
            .prop_map(|(sku, qty, price)| json!({"sku": sku, "qty": qty, "price_cents": price}));
        let coupon = prop_oneof![
            3 => Just(None),
            1 => Just(Some("SAVE10")),
            1 => Just(Some("SAVE25")),
            1 => Just(Some("FLAT500")),
        ];
        (
            "[a-z0-9-]{1,8}",
            proptest::collection::vec(item, 1..5),
            coupon,
        )
            .prop_map(|(id, items, coupon)| {
                let mut order = json!({"kind": "order", "id": id, "items": items});
                if let Some(coupon) = coupon {
                    order["coupon"] = json!(coupon);
                }
                order.to_string()
            })
    }

    /// Orders as clients send them, plus the mistakes clients make.
    fn message() -> impl Strategy<Value = String> {
        let item = (
            prop_oneof![
                Just(json!("A1")),
                Just(json!("")),
                "[a-zA-Z0-9\"\\\\é]{1,6}".prop_map(Value::from),
                Just(json!(7))
            ],
            prop_oneof![0u64..5, Just(u64::from(u32::MAX)), Just(1 << 40)],
            prop_oneof![0u64..100_000, Just(u64::MAX)],
            any::<bool>(),
        )
            .prop_map(|(sku, qty, price, complete)| {
                let mut item = json!({"sku": sku, "qty": qty, "price_cents": price});
                if !complete {
                    item.as_object_mut().unwrap().remove("price_cents");
                }
                item
            });
        let coupon = prop_oneof![
            Just(None),
            Just(Some(json!("SAVE10"))),
            Just(Some(json!("SAVE25"))),
            Just(Some(json!("FLAT500"))),
            Just(Some(json!("BOGUS"))),
            Just(Some(json!(null))),
            Just(Some(json!(10))),
            Just(Some(json!({"code": "SAVE10"}))),
        ];
        let order = (
            prop_oneof![4 => Just("order"), 1 => Just("refund")],
            prop_oneof![
                Just(json!("o-17")),
                Just(json!("")),
                "[a-z0-9\"\\\\\\n-]{1,8}".prop_map(Value::from),
                Just(json!(17))
            ],
            proptest::collection::vec(item, 0..4),
            coupon,
        )
            .prop_map(|(kind, id, items, coupon)| {
                let mut order = json!({"kind": kind, "id": id, "items": items});
                if let Some(coupon) = coupon {
                    order["coupon"] = coupon;
                }
                order.to_string()
            });
        prop_oneof![
            4 => valid_order(),
            4 => order.clone(),
            // Truncated and corrupted messages.
            2 => (order, any::<prop::sample::Index>()).prop_map(|(text, cut)| {
                let mut bytes = text.into_bytes();
                bytes.truncate(cut.index(bytes.len() + 1));
                String::from_utf8_lossy(&bytes).into_owned()
            }),
            1 => ".{0,40}",
        ]
    }

    fn normalised(reply: &[u8]) -> Value {
        serde_json::from_slice(reply).expect("every reply is JSON")
    }

    proptest! {
        #[test]
        fn v3_equals_v1_after_json_normalisation(message in message()) {
            let v1 = process(Release::V1, message.as_bytes());
            let v3 = process(Release::V3, message.as_bytes());
            prop_assert_eq!(normalised(&v1), normalised(&v3));
            // Receipts differ byte for byte, errors do not.
            prop_assert_eq!(v1 == v3, normalised(&v1)["kind"] == "error");
        }

        #[test]
        fn v2_equals_v1_byte_for_byte_without_a_coupon(message in message()) {
            let has_coupon = serde_json::from_str::<Value>(&message)
                .map(|value| value.get("coupon").is_some_and(|c| !c.is_null()))
                .unwrap_or(false);
            prop_assume!(!has_coupon);
            prop_assert_eq!(process(Release::V2, message.as_bytes()), process(Release::V1, message.as_bytes()));
        }

        #[test]
        fn v2_fails_every_order_v1_accepts_with_a_string_coupon(message in valid_order()) {
            let v1 = normalised(&process(Release::V1, message.as_bytes()));
            let string_coupon = serde_json::from_str::<Value>(&message)
                .map(|value| value.get("coupon").is_some_and(Value::is_string))
                .unwrap_or(false);
            prop_assert_eq!(&v1["kind"], "receipt");
            prop_assume!(string_coupon);
            let v2 = normalised(&process(Release::V2, message.as_bytes()));
            prop_assert_eq!(&v2["kind"], "error");
        }

        #[test]
        fn receipts_add_up(message in valid_order()) {
            let value = normalised(&process(Release::V1, message.as_bytes()));
            prop_assert_eq!(&value["kind"], "receipt");
            let order: Value = serde_json::from_str(&message).unwrap();
            let lines = order["items"].as_array().unwrap();
            let subtotal: u64 = lines.iter().map(|item| item["qty"].as_u64().unwrap() * item["price_cents"].as_u64().unwrap()).sum();
            prop_assert_eq!(value["items"].as_u64(), Some(lines.len() as u64));
            prop_assert_eq!(value["total_cents"].as_u64().unwrap() + value["discount_cents"].as_u64().unwrap(), subtotal);
            prop_assert!(value["discount_cents"].as_u64().unwrap() <= subtotal);
        }

        #[test]
        fn every_reply_is_a_receipt_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for release in [Release::V1, Release::V2, Release::V3] {
                let value = normalised(&process(release, &bytes));
                prop_assert!(value["kind"] == "receipt" || value["kind"] == "error");
            }
        }
    }
}
