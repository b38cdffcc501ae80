//! The two WAV facts recordings need: writing a μ-law file around the bytes a
//! media stream carried, and recognising a WAV before it is stored (and later
//! served back with `audio/wav`).

/// WAVE_FORMAT_MULAW (G.711 μ-law), as Twilio's media streams carry it.
const FORMAT_MULAW: u16 = 7;

/// A WAV file of 8-bit G.711 μ-law samples, `sample_rate` Hz, mono.
///
/// Non-PCM formats carry an 18-byte `fmt ` chunk (with `cbSize`) and a
/// `fact` chunk with the sample count; the data chunk is padded to an even
/// length, the pad byte counted by RIFF but not by `data`.
pub fn mulaw_wav(samples: &[u8], sample_rate: u32) -> Vec<u8> {
    let data_len = samples.len() as u32;
    let pad = data_len % 2;
    // "WAVE" + fmt (8 + 18) + fact (8 + 4) + data header (8) + data + pad.
    let riff_len = 4 + (8 + 18) + (8 + 4) + 8 + data_len + pad;
    let mut wav = Vec::with_capacity(8 + riff_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&riff_len.to_le_bytes());
    wav.extend_from_slice(b"WAVE");
    wav.extend_from_slice(b"fmt ");
    wav.extend_from_slice(&18u32.to_le_bytes());
    wav.extend_from_slice(&FORMAT_MULAW.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // channels
    wav.extend_from_slice(&sample_rate.to_le_bytes());
    wav.extend_from_slice(&sample_rate.to_le_bytes()); // bytes per second: one byte a sample
    wav.extend_from_slice(&1u16.to_le_bytes()); // block align
    wav.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(&0u16.to_le_bytes()); // cbSize: no extension
    wav.extend_from_slice(b"fact");
    wav.extend_from_slice(&4u32.to_le_bytes());
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.extend_from_slice(samples);
    if pad == 1 {
        wav.push(0);
    }
    wav
}

/// Whether `bytes` start like a WAV file (`RIFF` … `WAVE`). Only WAV is
/// stored: whatever is stored is later served from our own origin with its
/// content type, so a download that is not audio must not become one.
pub fn is_wav(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn a_mulaw_recording_has_format_7_at_8000_hz_mono_and_its_samples_as_data() {
        let samples: Vec<u8> = (0..=255).collect();
        let wav = mulaw_wav(&samples, 8000);
        assert!(is_wav(&wav));
        assert_eq!(u32_at(&wav, 4) as usize, wav.len() - 8, "RIFF length");
        assert_eq!(&wav[12..16], b"fmt ");
        assert_eq!(u32_at(&wav, 16), 18);
        assert_eq!(u16_at(&wav, 20), 7, "format tag: μ-law");
        assert_eq!(u16_at(&wav, 22), 1, "mono");
        assert_eq!(u32_at(&wav, 24), 8000, "sample rate");
        assert_eq!(u32_at(&wav, 28), 8000, "byte rate");
        assert_eq!(u16_at(&wav, 32), 1, "block align");
        assert_eq!(u16_at(&wav, 34), 8, "bits per sample");
        assert_eq!(&wav[38..42], b"fact");
        assert_eq!(u32_at(&wav, 46), 256, "sample count");
        assert_eq!(&wav[50..54], b"data");
        assert_eq!(u32_at(&wav, 54), 256);
        assert_eq!(&wav[58..], &samples[..]);
    }

    #[test]
    fn an_odd_length_recording_is_padded_outside_its_data() {
        let wav = mulaw_wav(&[1, 2, 3], 8000);
        assert_eq!(wav.len(), 58 + 4);
        assert_eq!(u32_at(&wav, 54), 3, "data length excludes the pad byte");
        assert_eq!(u32_at(&wav, 4) as usize, wav.len() - 8);
        assert_eq!(&wav[58..], &[1, 2, 3, 0]);
    }

    #[test]
    fn only_riff_wave_counts_as_a_recording() {
        assert!(!is_wav(b"<html><body>hi</body></html>"));
        assert!(!is_wav(b"RIFF"));
        assert!(!is_wav(b"RIFF\0\0\0\0AVI LIST"));
        assert!(is_wav(&mulaw_wav(&[], 8000)));
    }
}
