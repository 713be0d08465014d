//! Byte sizes as operators write them in configs and flags: `64MiB`, `1.5 GB`, `4096`.

use std::fmt;
use std::str::FromStr;

/// A number of bytes, parsed from and shown as a human size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "invalid size {s:?}: unknown unit {unit:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
                ));
            }
        };
        let value: f64 = num.parse().map_err(|_| {
            format!("invalid size {s:?}: expected a number followed by a unit, like 64MiB")
        })?;
        let bytes = value * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(format!("invalid size {s:?}: out of range"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        let units = [
            (1u64 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (m, u) in units {
            if self.0 >= m {
                return write!(f, "{:.1} {u}", b / m as f64);
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64MiB\", \"2 GB\" or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A quota: a size, or a share of the node's capacity (`"50%"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quota {
    Bytes(ByteSize),
    /// A fraction of the capacity, between 0 and 1.
    Share(f64),
}

impl Quota {
    /// The quota in bytes for a node of `capacity` bytes.
    pub fn bytes(&self, capacity: u64) -> u64 {
        match self {
            Quota::Bytes(b) => b.0,
            Quota::Share(f) => (capacity as f64 * f) as u64,
        }
    }
}

impl FromStr for Quota {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().strip_suffix('%') {
            Some(p) => {
                let v: f64 = p.trim().parse().map_err(|_| {
                    format!("invalid quota {s:?}: a percentage such as \"50%\" or a size")
                })?;
                if !(v > 0.0 && v <= 100.0) {
                    return Err(format!("invalid quota {s:?}: a share between 0% and 100%"));
                }
                Ok(Quota::Share(v / 100.0))
            }
            None => s.parse().map(Quota::Bytes),
        }
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quota::Bytes(b) => b.fmt(f),
            Quota::Share(v) => write!(f, "{}%", v * 100.0),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Quota {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quota;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a share of the capacity such as \"50%\", or a size such as \"100GiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quota, E> {
                Ok(Quota::Bytes(ByteSize(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quota, E> {
                u64::try_from(v)
                    .map(|b| Quota::Bytes(ByteSize(b)))
                    .map_err(|_| E::custom(format!("invalid quota {v}: must not be negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quota, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl serde::Serialize for Quota {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Quota::Bytes(b) => s.serialize_u64(b.0),
            Quota::Share(_) => s.serialize_str(&self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 << 20);
        assert_eq!("1.5 GB".parse::<ByteSize>().unwrap().0, 1_500_000_000);
        assert_eq!("2gib".parse::<ByteSize>().unwrap().0, 2 << 30);
        let e = "12XB".parse::<ByteSize>().unwrap_err();
        assert!(e.contains("unknown unit"), "{e}");
        assert!("MiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(3 << 20).to_string(), "3.0 MiB");
    }

    #[test]
    fn quotas_are_sizes_or_shares_of_the_capacity() {
        assert_eq!("50%".parse::<Quota>().unwrap().bytes(1000), 500);
        assert_eq!("1KiB".parse::<Quota>().unwrap().bytes(10), 1024);
        assert!("0%".parse::<Quota>().is_err() && "150%".parse::<Quota>().is_err());
        assert!("lots%".parse::<Quota>().unwrap_err().contains("percentage"));
    }
}
