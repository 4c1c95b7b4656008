//! What the structured targets share: a reader that turns the fuzzer's bytes into values, often at an edge.
// Each target uses a part of it.
#![allow(dead_code)]

/// Reads the input a few bytes at a time; zeros once it runs out.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }

    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, _| v << 8 | u64::from(self.u8()))
    }

    pub fn bit(&mut self) -> bool {
        self.u8() % 2 == 0
    }

    pub fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        self.bit().then(|| f(self))
    }

    /// A number in `[0, max]`, often at an edge (0, a subnormal, 1e-9, the maximum) or a small round value.
    pub fn num(&mut self, max: f64) -> f64 {
        match self.u8() % 9 {
            0 => 0.0,
            1 => f64::MIN_POSITIVE / 4.0,
            2 => max,
            3 => 1e-9_f64.min(max),
            4 => (f64::from(self.u8()) / 16.0).min(max),
            5 => f64::from(self.u8()) * max / 255.0,
            _ => {
                let v = f64::from_bits(self.u64()).abs();
                if v.is_finite() && v <= max {
                    v
                } else {
                    max / 3.0
                }
            }
        }
    }

    /// An integer in `[0, max]`, often at an edge or a power of two.
    pub fn int(&mut self, max: u64) -> u64 {
        match self.u8() % 4 {
            0 => 0,
            1 => max,
            2 => (u64::from(self.u8()) << (self.u8() % 40)).min(max),
            _ => self.u64() % max.saturating_add(1),
        }
    }
}
