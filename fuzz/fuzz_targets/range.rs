//! Fuzz the `Range` and `Content-Range` parsers in `berth_oci::range`.
//!
//! Input layout: the first 8 bytes (little-endian, zero-padded) are a blob length; the rest,
//! if UTF-8, is the header value. Both parsers see the same header.
//!
//! Invariants, beyond "never panics":
//! - `parse_range` never yields `start-end` with end < start, and what it yields prints back to
//!   a header that parses to the same range;
//! - `ByteRange::resolve(len)` yields first <= last < len, and the bytes it selects are what
//!   RFC 9110 says they are (a suffix selects min(n, len) bytes, `start-` runs to the end,
//!   `start-end` is clamped to the end);
//! - `parse_content_range` yields start <= end and round-trips through `start-end`.
#![no_main]

use berth_oci::range::{parse_content_range, parse_range, ByteRange};
use libfuzzer_sys::fuzz_target;

fn check_resolve(r: ByteRange, len: u64) {
    let Ok((first, last)) = r.resolve(len) else {
        // Unsatisfiable must mean: no byte of the blob is selected.
        match r {
            ByteRange::From(s) | ByteRange::FromTo(s, _) => assert!(len == 0 || s >= len),
            ByteRange::Suffix(n) => assert!(len == 0 || n == 0),
        }
        return;
    };
    assert!(
        first <= last,
        "{r:?} on {len} bytes resolved to {first}..={last}"
    );
    assert!(
        last < len,
        "{r:?} on {len} bytes resolved past the end: {first}..={last}"
    );
    match r {
        ByteRange::From(s) => assert_eq!((first, last), (s, len - 1)),
        ByteRange::FromTo(s, e) => assert_eq!((first, last), (s, e.min(len - 1))),
        ByteRange::Suffix(n) => {
            assert_eq!(last, len - 1);
            assert_eq!(last - first + 1, n.min(len));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (len_bytes, rest) = data.split_at(data.len().min(8));
    let mut buf = [0u8; 8];
    buf[..len_bytes.len()].copy_from_slice(len_bytes);
    let len = u64::from_le_bytes(buf);
    let Ok(header) = std::str::from_utf8(rest) else {
        return;
    };

    if let Ok(Some(r)) = parse_range(header) {
        let printed = match r {
            ByteRange::From(s) => format!("bytes={s}-"),
            ByteRange::FromTo(s, e) => {
                assert!(s <= e, "parse_range({header:?}) gave {r:?}");
                format!("bytes={s}-{e}")
            }
            ByteRange::Suffix(n) => format!("bytes=-{n}"),
        };
        assert_eq!(
            parse_range(&printed),
            Ok(Some(r)),
            "{printed:?} from {header:?}"
        );
        check_resolve(r, len);
        // The edges of the length space, whatever the input length was.
        for l in [
            0,
            1,
            2,
            len.saturating_sub(1),
            len.saturating_add(1),
            u64::MAX,
        ] {
            check_resolve(r, l);
        }
    }

    if let Ok((start, end)) = parse_content_range(header) {
        assert!(
            start <= end,
            "parse_content_range({header:?}) gave {start}-{end}"
        );
        assert_eq!(
            parse_content_range(&format!("{start}-{end}")),
            Ok((start, end))
        );
        assert_eq!(
            parse_content_range(&format!("bytes {start}-{end}/*")),
            Ok((start, end))
        );
    }
});
