//! Kubernetes resource quantities (`250m`, `1`, `0.5`, `512Mi`, `1e3`), read and checked.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A resource quantity as Kubernetes writes it, checked: a number that is not negative,
/// with an optional suffix (`m`, `k`, `M`, `G`, `T`, `P`, `E`, `Ki` … `Ei`, or an exponent
/// such as `e3`).
///
/// ```
/// use caxton_k8s::Quantity;
///
/// let request: Quantity = "250m".parse()?;
/// let limit: Quantity = "1".parse()?;
/// assert!(request.value() < limit.value());
/// assert_eq!("512Mi".parse::<Quantity>()?.value(), 512.0 * 1024.0 * 1024.0);
/// assert!("-1".parse::<Quantity>().is_err());
/// # Ok::<(), caxton_k8s::QuantityError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    text: String,
    value: f64,
}

/// Why a text is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantityError {
    /// The quantity is below zero.
    #[error("{0:?} is negative; a resource quantity is 0 or more")]
    Negative(String),
    /// The quantity is zero where an amount is needed.
    #[error("{0:?} is zero; give an amount above 0")]
    Zero(String),
    /// The text is not a Kubernetes quantity.
    #[error("{0:?} is not a Kubernetes quantity such as 250m, 1, 0.5, 512Mi or 2Gi")]
    Malformed(String),
}

impl Quantity {
    /// The quantity as written, e.g. `250m`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The quantity in base units (cores, bytes): `250m` is `0.25`, `1Ki` is `1024`.
    pub fn value(&self) -> f64 {
        self.value
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let malformed = || QuantityError::Malformed(text.to_owned());
        let (negative, unsigned) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_len = unsigned
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(unsigned.len());
        let (number, suffix) = unsigned.split_at(number_len);
        if number.is_empty()
            || number == "."
            || number.matches('.').count() > 1
            || !number.chars().any(|c| c.is_ascii_digit())
        {
            return Err(malformed());
        }
        let mantissa: f64 = number.parse().map_err(|_| malformed())?;
        let scale = match suffix {
            "" => 1.0,
            "n" => 1e-9,
            "u" => 1e-6,
            "m" => 1e-3,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "P" => 1e15,
            "E" => 1e18,
            "Ki" => 1024f64,
            "Mi" => 1024f64.powi(2),
            "Gi" => 1024f64.powi(3),
            "Ti" => 1024f64.powi(4),
            "Pi" => 1024f64.powi(5),
            "Ei" => 1024f64.powi(6),
            exponent if exponent.starts_with(['e', 'E']) => {
                let power = &exponent[1..];
                let digits = power.strip_prefix(['+', '-']).unwrap_or(power);
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    return Err(malformed());
                }
                let power: i32 = power.parse().map_err(|_| malformed())?;
                10f64.powi(power)
            }
            _ => return Err(malformed()),
        };
        let value = mantissa * scale;
        if !value.is_finite() {
            return Err(malformed());
        }
        if negative && value != 0.0 {
            return Err(QuantityError::Negative(text.to_owned()));
        }
        if value == 0.0 {
            return Err(QuantityError::Zero(text.to_owned()));
        }
        Ok(Quantity {
            text: unsigned.to_owned(),
            value,
        })
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantityVisitor;
        impl Visitor<'_> for QuantityVisitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Kubernetes quantity such as 250m, 1 or 512Mi")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Quantity, E> {
                text.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Quantity, E> {
                self.visit_str(&number.to_string())
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Quantity, E> {
                self.visit_str(&number.to_string())
            }
            fn visit_f64<E: de::Error>(self, number: f64) -> Result<Quantity, E> {
                self.visit_str(&number.to_string())
            }
        }
        deserializer.deserialize_any(QuantityVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> f64 {
        text.parse::<Quantity>().unwrap().value()
    }

    #[test]
    fn reads_the_usual_forms() {
        assert_eq!(value("250m"), 0.25);
        assert_eq!(value("1"), 1.0);
        assert_eq!(value("0.5"), 0.5);
        assert_eq!(value("1.5Gi"), 1.5 * 1024.0 * 1024.0 * 1024.0);
        assert_eq!(value("256M"), 256e6);
        assert_eq!(value("1e3"), 1000.0);
        assert_eq!(value("2E-1"), 0.2);
        assert_eq!(value("+1k"), 1000.0);
        assert_eq!("+1k".parse::<Quantity>().unwrap().as_str(), "1k");
    }

    #[test]
    fn refuses_negative_zero_and_malformed() {
        for text in ["-1", "-250m", "-0.5Gi"] {
            assert!(
                matches!(text.parse::<Quantity>(), Err(QuantityError::Negative(_))),
                "{text}"
            );
        }
        for text in ["0", "0m", "0.0Gi"] {
            assert!(
                matches!(text.parse::<Quantity>(), Err(QuantityError::Zero(_))),
                "{text}"
            );
        }
        for text in [
            "", "m", "1x", "1.2.3", "1 Gi", "Gi", "1e", "1e+", "1mi", "1KiB", ".", "1e999",
        ] {
            assert!(
                matches!(text.parse::<Quantity>(), Err(QuantityError::Malformed(_))),
                "{text}"
            );
        }
    }
}
