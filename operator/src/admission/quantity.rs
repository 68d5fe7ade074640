//! Just enough of Kubernetes' resource quantity grammar to compare two quantities, so the
//! agent's resources can be the largest any selecting watch asks for. The original text is
//! kept in the pod; the number is only used for ordering.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0:?} is not a Kubernetes quantity (like 100m, 0.5, 64Mi, 1G or 1e3)")]
pub struct QuantityError(pub String);

/// The value of a quantity such as `100m`, `1.5`, `64Mi`, `2G` or `12e6`, as a float.
pub fn value(text: &str) -> Result<f64, QuantityError> {
    let invalid = || QuantityError(text.to_string());
    let trimmed = text.trim();
    let number_end = trimmed
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '+' || c == '-'))))
        .map_or(trimmed.len(), |(i, _)| i);
    let (number, suffix) = trimmed.split_at(number_end);
    if !number.chars().any(|c| c.is_ascii_digit()) {
        return Err(invalid());
    }
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let multiplier = match suffix {
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
        exponent => {
            let digits = exponent
                .strip_prefix('e')
                .or_else(|| exponent.strip_prefix('E'))
                .ok_or_else(invalid)?;
            let power: i32 = digits.parse().map_err(|_| invalid())?;
            10f64.powi(power)
        }
    };
    Ok(number * multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_suffix_family() {
        let cases = [
            ("100m", 0.1),
            ("0.5", 0.5),
            ("2", 2.0),
            ("+3", 3.0),
            ("1k", 1000.0),
            ("16Mi", 16.0 * 1024.0 * 1024.0),
            ("1Gi", 1024f64.powi(3)),
            ("1G", 1e9),
            ("12e6", 12e6),
            ("5E-3", 5e-3),
            ("250u", 250e-6),
        ];
        for (text, expected) in cases {
            let got = value(text).unwrap();
            assert!(
                (got - expected).abs() < 1e-9 * expected.abs().max(1.0),
                "{text}: {got}"
            );
        }
    }

    #[test]
    fn orders_mixed_units() {
        assert!(value("1Gi").unwrap() > value("1G").unwrap());
        assert!(value("0.2").unwrap() > value("100m").unwrap());
    }

    #[test]
    fn refuses_garbage() {
        for text in ["", "m", "abc", "10 Mi", "1.2.3", "10x", "1e", "Mi"] {
            assert_eq!(value(text), Err(QuantityError(text.to_string())), "{text}");
        }
    }
}
