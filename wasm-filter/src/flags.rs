//! Envoy's response-flag bit field, rendered as the short codes Istio's `response_flags` uses.

/// Short codes in bit order (`envoy/stream_info/stream_info.h`, `CoreResponseFlag`).
const SHORT_CODES: [&str; 30] = [
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", // 0-9
    "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI", "IH", "DPE", "UMSDR", // 10-19
    "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR", "UDO", // 20-29
];

/// `-` when no flag is set, else the codes joined by `,` in bit order, as Envoy prints them.
/// Bits Envoy may add later are ignored rather than guessed.
pub fn short_string(bits: u64) -> String {
    let mut out = String::new();
    write_short(bits, &mut out);
    out
}

/// [`short_string`] into `out` (cleared first), so a reused buffer makes no allocation.
pub fn write_short(bits: u64, out: &mut String) {
    out.clear();
    for (i, code) in SHORT_CODES.iter().enumerate() {
        if bits & (1 << i) != 0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(code);
        }
    }
    if out.is_empty() {
        out.push('-');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_envoy() {
        let cases = [
            (0u64, "-"),
            (1 << 1, "UH"),
            ((1 << 1) | (1 << 5), "UH,UF"),
            (1 << 12, "UAEX"),
            (1 << 29, "UDO"),
            (1 << 40, "-"),
            ((1 << 40) | 1, "LH"),
        ];
        for (bits, want) in cases {
            assert_eq!(short_string(bits), want, "{bits:#x}");
        }
    }
}
