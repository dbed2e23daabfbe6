//! Deterministic, incompressible test data and its digests.
//!
//! Byte `i` of the blob with seed `s` depends only on `(s, i)`, so any slice of a blob can be
//! regenerated without the rest: pulls verify ranges without holding the whole blob.

use sha2::{Digest as _, Sha256};

/// The splitmix64 finaliser: a cheap bijective mix of one 64-bit word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of blob `index` in a family of blobs sharing `seed` (small-blob runs).
pub fn sub_seed(seed: u64, index: u64) -> u64 {
    mix(seed ^ mix(index.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

fn word(seed: u64, index: u64) -> [u8; 8] {
    mix(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(index)).to_le_bytes()
}

/// Fill `out` with bytes `offset..offset + out.len()` of the blob with `seed`.
pub fn fill(seed: u64, offset: u64, out: &mut [u8]) {
    let mut w = offset / 8;
    let skip = (offset % 8) as usize;
    let mut rest = out;
    if skip != 0 {
        let bytes = word(seed, w);
        let n = (8 - skip).min(rest.len());
        rest[..n].copy_from_slice(&bytes[skip..skip + n]);
        rest = &mut rest[n..];
        w += 1;
    }
    let mut chunks = rest.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&word(seed, w));
        w += 1;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let n = tail.len();
        tail.copy_from_slice(&word(seed, w)[..n]);
    }
}

/// The whole blob with `seed` and `size` bytes, generated on all cores.
pub fn blob(seed: u64, size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Pieces are multiples of 8 bytes so each starts on a word.
    let piece = size.div_ceil(threads).div_ceil(8) * 8;
    std::thread::scope(|s| {
        for (i, part) in v.chunks_mut(piece.max(8)).enumerate() {
            s.spawn(move || fill(seed, (i * piece) as u64, part));
        }
    });
    v
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The digest of the blob with `seed` and `size`, generated piecewise (constant memory).
pub fn blob_digest(seed: u64, size: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        fill(seed, off, &mut buf[..n]);
        h.update(&buf[..n]);
        off += n as u64;
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Parse sizes such as `1GiB`, `64MiB`, `32KiB`, `512` (binary units; `K`, `M`, `G` too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return Err(format!("bad size unit in {s:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} overflows"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_match_the_whole() {
        let whole = blob(7, 1000);
        for (off, len) in [(0, 1000), (3, 10), (8, 16), (13, 987), (999, 1), (5, 0)] {
            let mut part = vec![0u8; len];
            fill(7, off as u64, &mut part);
            assert_eq!(part, whole[off..off + len], "offset {off} len {len}");
        }
        assert_eq!(blob_digest(7, 1000), digest(&whole));
        assert_ne!(blob(8, 1000), whole);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("32k"), Ok(32 << 10));
        assert_eq!(parse_size("12"), Ok(12));
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("x").is_err());
    }
}
