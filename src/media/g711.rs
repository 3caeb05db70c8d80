//! G.711 µ-law and A-law: sample encode/decode and the direct µ-law <-> A-law
//! conversion used when the browser leg and the SIP leg picked different laws.
//!
//! Pure functions, no I/O. The code <-> code conversion goes through the linear
//! value (decode with one law, re-encode with the other); both 256-entry tables are
//! computed at compile time, so converting a 20 ms frame is 160 table lookups.

/// Bias added before µ-law segment search (in the 14-bit domain).
const ULAW_BIAS: i32 = 0x84 >> 2;
/// Largest magnitude µ-law can represent (14-bit domain, before the bias).
const ULAW_CLIP: i32 = 8159;
/// Upper bounds of the eight µ-law segments (14-bit domain, biased).
const ULAW_SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// Upper bounds of the eight A-law segments (13-bit domain).
const ALAW_SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// Index of the first segment whose end is >= `value`, or 8 when above all of them.
const fn segment(value: i32, ends: &[i32; 8]) -> usize {
    let mut i = 0;
    while i < 8 {
        if value <= ends[i] {
            return i;
        }
        i += 1;
    }
    8
}

/// Encodes one 16-bit linear PCM sample as µ-law.
pub const fn linear_to_ulaw(sample: i16) -> u8 {
    let mut pcm = (sample as i32) >> 2;
    let mask: u8 = if pcm < 0 {
        pcm = -pcm;
        0x7F
    } else {
        0xFF
    };
    if pcm > ULAW_CLIP {
        pcm = ULAW_CLIP;
    }
    pcm += ULAW_BIAS;
    let seg = segment(pcm, &ULAW_SEG_END);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let uval = ((seg as i32) << 4) | ((pcm >> (seg + 1)) & 0x0F);
    (uval as u8) ^ mask
}

/// Decodes one µ-law code to 16-bit linear PCM.
pub const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let mut t = (((u & 0x0F) as i32) << 3) + 0x84;
    t <<= ((u & 0x70) >> 4) as i32;
    if u & 0x80 != 0 {
        (0x84 - t) as i16
    } else {
        (t - 0x84) as i16
    }
}

/// Encodes one 16-bit linear PCM sample as A-law.
pub const fn linear_to_alaw(sample: i16) -> u8 {
    let mut pcm = (sample as i32) >> 3;
    let mask: u8 = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let seg = segment(pcm, &ALAW_SEG_END);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mut aval = (seg as i32) << 4;
    if seg < 2 {
        aval |= (pcm >> 1) & 0x0F;
    } else {
        aval |= (pcm >> seg) & 0x0F;
    }
    (aval as u8) ^ mask
}

/// Decodes one A-law code to 16-bit linear PCM.
pub const fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 { t as i16 } else { -t as i16 }
}

/// Builds the µ-law -> A-law code table.
const fn build_ulaw_to_alaw() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = linear_to_alaw(ulaw_to_linear(i as u8));
        i += 1;
    }
    table
}

/// Builds the A-law -> µ-law code table.
const fn build_alaw_to_ulaw() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = linear_to_ulaw(alaw_to_linear(i as u8));
        i += 1;
    }
    table
}

/// µ-law code -> A-law code.
static ULAW_TO_ALAW: [u8; 256] = build_ulaw_to_alaw();
/// A-law code -> µ-law code.
static ALAW_TO_ULAW: [u8; 256] = build_alaw_to_ulaw();

/// Converts one µ-law code to the A-law code of (nearly) the same level.
pub fn ulaw_to_alaw(code: u8) -> u8 {
    ULAW_TO_ALAW[code as usize]
}

/// Converts one A-law code to the µ-law code of (nearly) the same level.
pub fn alaw_to_ulaw(code: u8) -> u8 {
    ALAW_TO_ULAW[code as usize]
}

/// Converts a µ-law payload to A-law, appending to `out`.
pub fn ulaw_frame_to_alaw(input: &[u8], out: &mut Vec<u8>) {
    out.extend(input.iter().map(|&c| ULAW_TO_ALAW[c as usize]));
}

/// Converts an A-law payload to µ-law, appending to `out`.
pub fn alaw_frame_to_ulaw(input: &[u8], out: &mut Vec<u8>) {
    out.extend(input.iter().map(|&c| ALAW_TO_ULAW[c as usize]));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantisation step of the A-law segment that holds `v` (16-bit domain).
    fn alaw_step(v: i32) -> i32 {
        let m = v.unsigned_abs().max(1);
        if m < 512 { 16 } else { 16 << (m.ilog2() - 8) }
    }

    /// Quantisation step of the µ-law segment that holds `v` (16-bit domain).
    fn ulaw_step(v: i32) -> i32 {
        let m = v.unsigned_abs();
        8 << ((m + 132) / 132).ilog2()
    }

    /// The coarser of the two steps at level `v`.
    fn step(v: i32) -> i32 {
        alaw_step(v).max(ulaw_step(v))
    }

    #[test]
    fn known_ulaw_values() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        // Smallest non-zero steps: ±8.
        assert_eq!(ulaw_to_linear(0xFE), 8);
        assert_eq!(ulaw_to_linear(0x7E), -8);
    }

    #[test]
    fn known_alaw_values() {
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn encode_decode_is_idempotent_per_law() {
        // Decoding a code and re-encoding the value yields the same code, except
        // µ-law's negative zero (0x7F), which encodes back as positive zero.
        for code in 0..=255u8 {
            let u = linear_to_ulaw(ulaw_to_linear(code));
            if code == 0x7F {
                assert_eq!(u, 0xFF);
            } else {
                assert_eq!(u, code, "µ-law code {code:#04x}");
            }
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "A-law {code:#04x}"
            );
        }
    }

    #[test]
    fn quantisation_error_is_bounded() {
        for v in (i16::MIN as i32..=i16::MAX as i32).step_by(7) {
            let s = v as i16;
            let du = ulaw_to_linear(linear_to_ulaw(s)) as i32;
            let da = alaw_to_linear(linear_to_alaw(s)) as i32;
            if v.abs() < 32000 {
                assert!((du - v).abs() <= ulaw_step(v) + 4, "µ-law {v} -> {du}");
                assert!((da - v).abs() <= alaw_step(v) + 8, "A-law {v} -> {da}");
            }
        }
    }

    #[test]
    fn law_conversion_keeps_level() {
        for code in 0..=255u8 {
            let lu = ulaw_to_linear(code) as i32;
            let la = alaw_to_linear(ulaw_to_alaw(code)) as i32;
            assert!((lu - la).abs() <= step(lu), "µ {code:#04x}: {lu} vs {la}");
            // Sign is kept (zero may go either way).
            assert!(lu.signum() * la.signum() >= 0, "sign of {code:#04x}");

            let la2 = alaw_to_linear(code) as i32;
            let lu2 = ulaw_to_linear(alaw_to_ulaw(code)) as i32;
            assert!(
                (la2 - lu2).abs() <= step(la2),
                "A {code:#04x}: {la2} vs {lu2}"
            );
        }
    }

    #[test]
    fn law_conversion_known_values() {
        // µ-law silence (0) maps to A-law's smallest level (+8, A-law has no zero), and
        // that maps to µ-law's +8 (0xFE), as in G.711's own conversion tables.
        assert_eq!(ulaw_to_alaw(0xFF), 0xD5);
        assert_eq!(alaw_to_ulaw(0xD5), 0xFE);
        assert_eq!(ulaw_to_alaw(0x7E), 0x55);
        assert_eq!(alaw_to_ulaw(0x55), 0x7E);
        // Full scale maps to full scale.
        assert_eq!(ulaw_to_alaw(0x80), 0xAA);
        assert_eq!(ulaw_to_alaw(0x00), 0x2A);
        assert_eq!(alaw_to_ulaw(0xAA), 0x80);
        assert_eq!(alaw_to_ulaw(0x2A), 0x00);
    }

    #[test]
    fn round_trip_u_a_u_is_stable() {
        // A second round trip changes nothing: u -> a -> u is a projection.
        for code in 0..=255u8 {
            let once = alaw_to_ulaw(ulaw_to_alaw(code));
            let twice = alaw_to_ulaw(ulaw_to_alaw(once));
            assert_eq!(once, twice, "µ-law {code:#04x}");
        }
    }

    #[test]
    fn frame_conversion_matches_per_sample() {
        let input: Vec<u8> = (0..=255u8).collect();
        let mut a = Vec::new();
        ulaw_frame_to_alaw(&input, &mut a);
        let mut u = Vec::new();
        alaw_frame_to_ulaw(&a, &mut u);
        for (i, &c) in input.iter().enumerate() {
            assert_eq!(a[i], ulaw_to_alaw(c));
            assert_eq!(u[i], alaw_to_ulaw(a[i]));
        }
    }
}
