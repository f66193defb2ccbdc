//! Kubernetes resource quantities (`500m`, `2`, `1.5Gi`, `128974848`,
//! `129e6`, `129M`) as CPU millicores and memory bytes, rounded up as the
//! API server does.

/// Parses a quantity into its value as a float.
fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
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
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0).then_some(v)
}

fn to_i64(v: f64) -> Option<i64> {
    // Quantities beyond 2^62 are not real requests.
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    (v < 4.6e18).then(|| v.ceil() as i64)
}

/// CPU in millicores.
pub fn cpu_millis(q: &str) -> Option<i64> {
    to_i64(parse(q)? * 1000.0 - 1e-9)
}

/// Memory in bytes.
pub fn memory_bytes(q: &str) -> Option<i64> {
    to_i64(parse(q)? - 1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_quantities() {
        assert_eq!(cpu_millis("500m"), Some(500));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("0.1"), Some(100));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(cpu_millis("100u"), Some(1));
        assert_eq!(memory_bytes("1Gi"), Some(1 << 30));
        assert_eq!(memory_bytes("512Mi"), Some(512 << 20));
        assert_eq!(memory_bytes("129e6"), Some(129_000_000));
        assert_eq!(memory_bytes("129M"), Some(129_000_000));
        assert_eq!(memory_bytes("128974848"), Some(128_974_848));
        assert_eq!(memory_bytes("1k"), Some(1000));
        assert_eq!(memory_bytes("lots"), None);
        assert_eq!(memory_bytes("1Zi"), None);
        assert_eq!(memory_bytes("-1"), None);
        assert_eq!(memory_bytes(""), None);
    }
}
