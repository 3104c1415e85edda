//! Small shared utilities.

/// Wall-clock milliseconds since the Unix epoch (0 before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A duration written as `"250ms"`, `"1s"`, `"5m"`, `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub std::time::Duration);

impl<'de> serde::Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

/// Parses `"<n>ms|s|m|h|d"`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split =
        s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| format!("duration '{s}' needs a unit (ms, s, m, h, d)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad duration '{s}'"))?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        u => return Err(format!("unknown duration unit '{u}' in '{s}' (ms, s, m, h, d)")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

pub fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && s.len() <= 64
}

pub mod hash {
    //! A fast, non-cryptographic hasher for maps whose keys rockfeed itself
    //! produces or bounds (metric catalog, emulator rows and tablets). Not
    //! DoS-resistant; SipHash on these keys was a measurable share of the hot
    //! paths. Do not use it for maps keyed by unbounded untrusted input.

    /// A small multiplicative hasher (FxHash-style mixing, murmur3 finish).
    #[derive(Default)]
    pub struct FxHasher(u64);

    impl FxHasher {
        #[inline]
        fn mix(&mut self, w: u64) {
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    impl std::hash::Hasher for FxHasher {
        fn write(&mut self, bytes: &[u8]) {
            let mut chunks = bytes.chunks_exact(8);
            for c in &mut chunks {
                self.mix(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
            }
            let rest = chunks.remainder();
            if !rest.is_empty() {
                let mut w = [0u8; 8];
                w[..rest.len()].copy_from_slice(rest);
                self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
            }
        }

        fn write_u8(&mut self, i: u8) {
            self.mix(i as u64);
        }

        fn write_u32(&mut self, i: u32) {
            self.mix(i as u64);
        }

        fn write_u64(&mut self, i: u64) {
            self.mix(i);
        }

        fn write_usize(&mut self, i: usize) {
            self.mix(i as u64);
        }

        fn finish(&self) -> u64 {
            // murmur3's fmix64: spread the multiply's high bits into the low
            // bits hashbrown indexes by.
            let mut h = self.0;
            h ^= h >> 33;
            h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
            h ^= h >> 33;
            h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            h ^ (h >> 33)
        }
    }

    /// `BuildHasher` for [`FxHasher`].
    pub type FastHash = std::hash::BuildHasherDefault<FxHasher>;
}
