//! Resources a job asks for: CPUs, memory, GPUs, shared memory.
//!
//! Memory sizes follow the original dstack: decimal units are powers of ten (`1GB` = 10^9
//! bytes), binary units are powers of two (`1GiB` = `1Gi` = 2^30 bytes). A bare `K`, `M`, `G`,
//! `T` is decimal too. Units are case-insensitive (`512mib`), fractions are allowed
//! (`1.5GB`), a number without a unit is refused (it is ambiguous: bytes? megabytes?).

use serde::{Deserialize, Serialize};

/// The GPUs a job asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuRequest {
    /// How many GPUs.
    pub count: u32,
    /// The GPU model (`v100`, `A100`), when the job needs one in particular.
    pub name: Option<String>,
    /// The least memory each GPU must have, in bytes.
    pub memory_bytes: Option<u64>,
}

/// What a job needs to run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU count.
    pub cpu: Option<u32>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// GPUs; `None` when no GPU is requested (a count of zero is `None`).
    pub gpu: Option<GpuRequest>,
    /// Shared memory (`/dev/shm`) size in bytes.
    pub shm_size_bytes: Option<u64>,
}

impl Resources {
    /// The number of GPUs requested (0 when none).
    #[must_use]
    pub fn gpu_count(&self) -> u32 {
        self.gpu.as_ref().map_or(0, |g| g.count)
    }
}

/// Why a memory size was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// Nothing but whitespace.
    #[error("empty memory size")]
    Empty,
    /// No number in front of the unit.
    #[error("`{0}` does not start with a number")]
    NoNumber(String),
    /// A number with no unit.
    #[error("`{0}` has no unit")]
    NoUnit(String),
    /// A unit we do not know.
    #[error("unknown memory unit `{unit}` in `{text}`")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit part.
        unit: String,
    },
    /// Larger than 2^64 bytes.
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// The units that [`parse_memory`] understands, for help messages.
pub const MEMORY_UNITS_HELP: &str = "use a unit: B, KB, MB, GB, TB (powers of 10) or KiB, MiB, GiB, TiB (powers of 2), e.g. `512MiB` or `32GB`";

/// Parses a memory size such as `32GB`, `512MiB`, `1Gi` or `1.5 GB` into bytes.
///
/// # Errors
/// Returns a [`MemoryError`] when the text is not a number followed by a known unit.
pub fn parse_memory(text: &str) -> Result<u64, MemoryError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(MemoryError::Empty);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    if number.is_empty() || number == "." {
        return Err(MemoryError::NoNumber(t.to_owned()));
    }
    if unit.is_empty() {
        return Err(MemoryError::NoUnit(t.to_owned()));
    }
    const UNITS: [(&str, u64); 17] = [
        ("b", 1),
        ("k", 1_000),
        ("kb", 1_000),
        ("m", 1_000_000),
        ("mb", 1_000_000),
        ("g", 1_000_000_000),
        ("gb", 1_000_000_000),
        ("t", 1_000_000_000_000),
        ("tb", 1_000_000_000_000),
        ("ki", 1 << 10),
        ("kib", 1 << 10),
        ("mi", 1 << 20),
        ("mib", 1 << 20),
        ("gi", 1 << 30),
        ("gib", 1 << 30),
        ("ti", 1 << 40),
        ("tib", 1 << 40),
    ];
    let Some(&(_, multiplier)) = UNITS
        .iter()
        .find(|(name, _)| unit.eq_ignore_ascii_case(name))
    else {
        return Err(MemoryError::UnknownUnit {
            text: t.to_owned(),
            unit: unit.to_owned(),
        });
    };
    let bytes = if let Ok(whole) = number.parse::<u64>() {
        whole.checked_mul(multiplier)
    } else {
        let value: f64 = number
            .parse()
            .map_err(|_| MemoryError::NoNumber(t.to_owned()))?;
        // Exact below 2^53; fractional byte counts round to the nearest byte.
        #[allow(clippy::cast_precision_loss)]
        let bytes = (value * multiplier as f64).round();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        (bytes.is_finite() && bytes < 1.8e19).then_some(bytes as u64)
    };
    bytes.ok_or_else(|| MemoryError::TooLarge(t.to_owned()))
}

/// Formats bytes for people: `512 MiB`, `32 GB`, `1536 B`: the exact unit when one divides.
#[must_use]
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 8] = [
        (1 << 40, "TiB"),
        (1_000_000_000_000, "TB"),
        (1 << 30, "GiB"),
        (1_000_000_000, "GB"),
        (1 << 20, "MiB"),
        (1_000_000, "MB"),
        (1 << 10, "KiB"),
        (1_000, "KB"),
    ];
    for (size, unit) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_and_binary_units() {
        assert_eq!(parse_memory("32GB"), Ok(32_000_000_000));
        assert_eq!(parse_memory("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_memory("512MiB"), Ok(512 << 20));
        assert_eq!(parse_memory("1Gi"), Ok(1 << 30));
        assert_eq!(parse_memory("1gib"), Ok(1 << 30));
        assert_eq!(parse_memory("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(parse_memory("100B"), Ok(100));
        assert_eq!(parse_memory("2G"), Ok(2_000_000_000));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_memory(""), Err(MemoryError::Empty));
        assert_eq!(parse_memory("512"), Err(MemoryError::NoUnit("512".into())));
        assert_eq!(parse_memory("GB"), Err(MemoryError::NoNumber("GB".into())));
        assert!(matches!(
            parse_memory("5 parsecs"),
            Err(MemoryError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_memory("99999999999TiB"),
            Err(MemoryError::TooLarge(_))
        ));
        assert!(matches!(
            parse_memory("1.2.3GB"),
            Err(MemoryError::NoNumber(_))
        ));
    }

    #[test]
    fn formatting_picks_an_exact_unit() {
        assert_eq!(format_bytes(512 << 20), "512 MiB");
        assert_eq!(format_bytes(32_000_000_000), "32 GB");
        assert_eq!(format_bytes(1536), "1536 B");
    }
}
