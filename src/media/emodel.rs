//! The ITU-T G.107 E-model: transmission rating R and the MOS estimate derived from it.
//!
//! Pure functions. `R = Ro − Is − Id − Ie,eff + A`, with every parameter we do not
//! measure at its G.107 default (SLR 8, RLR 2, STMR 15, LSTR 18, Ds = Dr = 3, TELR 65,
//! WEPL 110, qdu 1, Nc −70, Nfor −64, Ps = Pr = 35, A 0), which gives R = 93.2 on a
//! perfect connection. Measured inputs: the one-way delay (Ta = T, Tr = 2T), the packet
//! loss (Ppl), and the codec's Ie/Bpl. The formulas, values and their sources are in
//! `docs/quality.md`.

use std::time::Duration;

use super::codec::AudioCodec;

/// G.107 default send loudness rating, dB.
const SLR: f64 = 8.0;
/// Receive loudness rating, dB.
const RLR: f64 = 2.0;
/// Sidetone masking rating, dB.
const STMR: f64 = 15.0;
/// Listener sidetone rating, dB.
const LSTR: f64 = 18.0;
/// D-value of the telephone, send side.
const DS: f64 = 3.0;
/// Talker echo loudness rating, dB.
const TELR: f64 = 65.0;
/// Weighted echo path loss, dB.
const WEPL: f64 = 110.0;
/// Quantizing distortion units.
const QDU: f64 = 1.0;
/// Circuit noise, dBm0p.
const NC: f64 = -70.0;
/// Noise floor at the receive side, dBmp.
const NFOR: f64 = -64.0;
/// Room noise at the send side, dB(A).
const PS: f64 = 35.0;
/// Room noise at the receive side, dB(A).
const PR: f64 = 35.0;
/// Advantage factor.
const A: f64 = 0.0;

/// A codec's equipment impairment (G.113 Appendix I style).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecImpairment {
    /// Equipment impairment factor Ie.
    pub ie: f64,
    /// Packet-loss robustness factor Bpl.
    pub bpl: f64,
}

/// The values we use per codec (see `docs/quality.md` for sources and assumptions).
pub fn codec_impairment(codec: AudioCodec) -> CodecImpairment {
    match codec {
        // G.113 Appendix I: G.711 with packet loss concealment (G.711 Appendix I).
        AudioCodec::Pcmu | AudioCodec::Pcma => CodecImpairment { ie: 0.0, bpl: 25.1 },
        // No ITU-T value exists; see docs/quality.md.
        AudioCodec::Opus => CodecImpairment { ie: 0.0, bpl: 20.0 },
    }
}

/// What the E-model is fed for one connection (or one leg of it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EModelInput {
    /// Mouth-to-ear one-way delay (Ta; also used as T, and 2T as Tr).
    pub one_way_delay: Duration,
    /// Packet loss ratio, 0..=1 (Ppl / 100).
    pub loss: f64,
    /// Burst ratio (1 for random loss).
    pub burst_ratio: f64,
    /// Codec impairment (summed over tandem codecs when transcoding).
    pub codec: CodecImpairment,
}

/// The noise and loudness terms shared by Ro, Is and Id at the default parameters.
struct Basic {
    /// Total noise No, dBm0p.
    no: f64,
    /// Basic signal-to-noise ratio Ro.
    ro: f64,
}

/// Ro and No from the default parameters (G.107 §7.2).
fn basic() -> Basic {
    let olr = SLR + RLR;
    let nfo = NFOR + RLR;
    let pre = PR + 10.0 * (1.0 + 10f64.powf((10.0 - LSTR) / 10.0)).log10();
    let nor = RLR - 121.0 + pre + 0.008 * (pre - 35.0).powi(2);
    let nos = PS - SLR - DS - 100.0 + 0.004 * (PS - olr - DS - 14.0).powi(2);
    let no = 10.0
        * (10f64.powf(NC / 10.0)
            + 10f64.powf(nos / 10.0)
            + 10f64.powf(nor / 10.0)
            + 10f64.powf(nfo / 10.0))
        .log10();
    Basic {
        no,
        ro: 15.0 - 1.5 * (SLR + no),
    }
}

/// The simultaneous impairment factor Is = Iolr + Ist + Iq (G.107 §7.3) at echo delay `t` ms.
fn simultaneous(b: &Basic, t: f64) -> f64 {
    let olr = SLR + RLR;
    let xolr = olr + 0.2 * (64.0 + b.no - RLR);
    let iolr = 20.0 * ((1.0 + (xolr / 8.0).powi(8)).powf(1.0 / 8.0) - xolr / 8.0);
    let stmro =
        -10.0 * (10f64.powf(-STMR / 10.0) + (-t / 4.0).exp() * 10f64.powf(-TELR / 10.0)).log10();
    let ist = 12.0 * (1.0 + ((stmro - 13.0) / 6.0).powi(8)).powf(1.0 / 8.0)
        - 28.0 * (1.0 + ((stmro + 1.0) / 19.4).powi(35)).powf(1.0 / 35.0)
        - 13.0 * (1.0 + ((stmro - 3.0) / 33.0).powi(13)).powf(1.0 / 13.0)
        + 29.0;
    let q = 37.0 - 15.0 * QDU.log10();
    let g = 1.07 + 0.258 * q + 0.0602 * q * q;
    let z = 46.0 / 30.0 - g / 40.0;
    let y = (b.ro - 100.0) / 15.0 + 46.0 / 8.4 - g / 9.0;
    let iq = 15.0 * (1.0 + 10f64.powf(y) + 10f64.powf(z)).log10();
    iolr + ist + iq
}

/// The delay impairment Id = Idte + Idle + Idd (G.107 §7.4); `t`, `ta`, `tr` in ms.
fn delay_impairment(b: &Basic, t: f64, ta: f64, tr: f64) -> f64 {
    let terv =
        TELR - 40.0 * ((1.0 + t / 10.0) / (1.0 + t / 150.0)).log10() + 6.0 * (-0.3 * t * t).exp();
    let roe = -1.5 * (b.no - RLR);
    let re = 80.0 + 2.5 * (terv - 14.0);
    let idte =
        ((roe - re) / 2.0 + ((roe - re).powi(2) / 4.0 + 100.0).sqrt() - 1.0) * (1.0 - (-t).exp());
    let rle = 10.5 * (WEPL + 7.0) * (tr + 1.0).powf(-0.25);
    let idle = (b.ro - rle) / 2.0 + ((b.ro - rle).powi(2) / 4.0 + 169.0).sqrt();
    let idd = if ta <= 100.0 {
        0.0
    } else {
        let x = (ta / 100.0).log2();
        25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
            + 2.0)
    };
    idte + idle + idd
}

/// The effective equipment impairment Ie,eff = Ie + (95 − Ie)·Ppl/(Ppl/BurstR + Bpl).
pub fn effective_equipment_impairment(codec: CodecImpairment, loss: f64, burst_ratio: f64) -> f64 {
    let ppl = (loss * 100.0).clamp(0.0, 100.0);
    let burst = burst_ratio.max(1.0);
    codec.ie + (95.0 - codec.ie) * ppl / (ppl / burst + codec.bpl)
}

/// The transmission rating R.
pub fn r_factor(input: &EModelInput) -> f64 {
    let b = basic();
    let ta = input.one_way_delay.as_secs_f64() * 1000.0;
    let (t, tr) = (ta, 2.0 * ta);
    let is = simultaneous(&b, t);
    let id = delay_impairment(&b, t, ta, tr);
    let ie = effective_equipment_impairment(input.codec, input.loss, input.burst_ratio);
    b.ro - is - id - ie + A
}

/// The MOS (conversational quality, 1..=4.5) for rating `r` (G.107 Annex B).
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        // The polynomial dips just below 1 for R < 6.5; MOS is never below 1.
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).max(1.0)
    }
}

/// The MOS for `input`.
pub fn mos(input: &EModelInput) -> f64 {
    mos_from_r(r_factor(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    const G711: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };

    fn input(delay_ms: u64, loss: f64, codec: CodecImpairment) -> EModelInput {
        EModelInput {
            one_way_delay: Duration::from_millis(delay_ms),
            loss,
            burst_ratio: 1.0,
            codec,
        }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn defaults_give_the_g107_reference_rating() {
        // G.107: all default values give R = 93.2 (Ro = 94.77, Is = 1.41).
        let b = basic();
        assert!(close(b.ro, 94.77, 0.01), "Ro {}", b.ro);
        assert!(close(simultaneous(&b, 0.0), 1.41, 0.01));
        let r = r_factor(&input(0, 0.0, G711));
        assert!(close(r, 93.2, 0.05), "R {r}");
        assert!(close(mos_from_r(r), 4.41, 0.01));
    }

    #[test]
    fn delay_impairment_worked_values() {
        let b = basic();
        // Idd only starts above 100 ms; at Ta = 200 ms (X = 1):
        // 25·(2^(1/6) − 3·(1 + 3^-6)^(1/6) + 2) = 3.04.
        let with = delay_impairment(&b, 200.0, 200.0, 400.0);
        let without = delay_impairment(&b, 200.0, 100.0, 400.0);
        assert!(close(with - without, 3.044, 0.005), "{}", with - without);
        // R at 150, 200, 300 ms one-way with no loss (hand-checked with the same formulas).
        for (ms, r) in [(150, 89.54), (200, 85.80), (300, 72.67)] {
            let got = r_factor(&input(ms, 0.0, G711));
            assert!(close(got, r, 0.05), "{ms} ms: R {got}, expected {r}");
        }
    }

    #[test]
    fn loss_impairment_worked_values() {
        // 1 % random loss on G.711 with PLC: 95·1/(1 + 25.1) = 3.64.
        let ie = effective_equipment_impairment(G711, 0.01, 1.0);
        assert!(close(ie, 3.640, 0.001), "{ie}");
        // 2 % on G.711 without PLC (Bpl 4.3): 95·2/6.3 = 30.16.
        let no_plc = CodecImpairment { ie: 0.0, bpl: 4.3 };
        assert!(close(
            effective_equipment_impairment(no_plc, 0.02, 1.0),
            30.159,
            0.001
        ));
        // Bursty loss hurts more than random loss.
        assert!(
            effective_equipment_impairment(G711, 0.05, 2.0)
                > effective_equipment_impairment(G711, 0.05, 1.0)
        );
        let r = r_factor(&input(0, 0.01, G711));
        assert!(close(r, 89.57, 0.05), "R {r}");
        assert!(close(mos_from_r(r), 4.33, 0.01));
    }

    #[test]
    fn mos_mapping_worked_values() {
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
        // R = 50: 1 + 1.75 + 50·(−10)·50·7e-6 = 2.575.
        assert!(close(mos_from_r(50.0), 2.575, 1e-9));
        // R = 80: 1 + 2.8 + 80·20·20·7e-6 = 4.024.
        assert!(close(mos_from_r(80.0), 4.024, 1e-9));
        // Monotonic over the useful range.
        let mut last = 0.0;
        for r in 0..=100 {
            let m = mos_from_r(f64::from(r));
            assert!(m >= last);
            last = m;
        }
    }

    #[test]
    fn heavy_loss_and_delay_end_low() {
        let m = mos(&input(400, 0.2, G711));
        assert!(m < 2.0, "{m}");
        let opus = codec_impairment(AudioCodec::Opus);
        assert!(mos(&input(40, 0.0, opus)) > 4.3);
    }
}
