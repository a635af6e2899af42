//! What the chunking fuzz targets (`line_framer`, `lenprefix`) share: reading their input
//! layout `[max][n][n × u16 LE cut offsets][payload]`.

/// Splits fuzz input into its `max` byte, the payload, and the payload cut into pieces at
/// `n % 8` offsets (each taken modulo `payload.len() + 1`, sorted; duplicates give empty
/// pieces). `None` when the input is too short for its own header.
pub fn cut(data: &[u8]) -> Option<(u8, &[u8], Vec<&[u8]>)> {
    let [max, n, rest @ ..] = data else { return None };
    let n = usize::from(*n % 8);
    if rest.len() < 2 * n {
        return None;
    }
    let (cuts, payload) = rest.split_at(2 * n);
    let mut at: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (payload.len() + 1))
        .collect();
    at.sort_unstable();
    let mut chunks = Vec::with_capacity(n + 1);
    let mut start = 0;
    for end in at {
        chunks.push(&payload[start..end]);
        start = end;
    }
    chunks.push(&payload[start..]);
    Some((*max, payload, chunks))
}
