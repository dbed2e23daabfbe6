//! Parsers for the `Range` request header (blob reads) and the `Content-Range` header of
//! chunked uploads.

/// A single byte range from a `Range: bytes=...` header, before it meets a blob's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-`
    From(u64),
    /// `bytes=start-end`, inclusive.
    FromTo(u64, u64),
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

/// A `Range` or `Content-Range` header that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed range header")]
pub struct RangeError;

/// A range that does not overlap the blob (answered with 416).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("range not satisfiable")]
pub struct Unsatisfiable;

fn num(s: &str) -> Result<u64, RangeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError);
    }
    s.parse().map_err(|_| RangeError)
}

/// Parse a `Range` header.
///
/// Returns `Ok(None)` for what a server may ignore and answer with the whole body: another
/// unit than `bytes`, or several ranges.
///
/// # Errors
/// [`RangeError`] when the `bytes=` header is malformed.
pub fn parse_range(header: &str) -> Result<Option<ByteRange>, RangeError> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.trim().split_once('-').ok_or(RangeError)?;
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Err(RangeError),
        (true, false) => Ok(Some(ByteRange::Suffix(num(b)?))),
        (false, true) => Ok(Some(ByteRange::From(num(a)?))),
        (false, false) => {
            let (start, end) = (num(a)?, num(b)?);
            if end < start {
                return Err(RangeError);
            }
            Ok(Some(ByteRange::FromTo(start, end)))
        }
    }
}

impl ByteRange {
    /// The inclusive `(first, last)` byte positions within a blob of `len` bytes.
    ///
    /// # Errors
    /// [`Unsatisfiable`] when the range selects no byte of the blob.
    pub fn resolve(self, len: u64) -> Result<(u64, u64), Unsatisfiable> {
        if len == 0 {
            return Err(Unsatisfiable);
        }
        match self {
            Self::From(s) if s < len => Ok((s, len - 1)),
            Self::FromTo(s, e) if s < len => Ok((s, e.min(len - 1))),
            Self::Suffix(n) if n > 0 => Ok((len - n.min(len), len - 1)),
            _ => Err(Unsatisfiable),
        }
    }
}

/// Parse the `Content-Range` of an upload chunk: `start-end` (what docker sends) or
/// `bytes start-end/total` or `bytes start-end/*`. Returns the inclusive `(start, end)`.
///
/// # Errors
/// [`RangeError`] when the header is malformed or `end < start`.
pub fn parse_content_range(header: &str) -> Result<(u64, u64), RangeError> {
    let h = header.trim();
    let h = h.strip_prefix("bytes").map(str::trim_start).unwrap_or(h);
    let h = h.strip_prefix('=').unwrap_or(h);
    let (range, total) = h.split_once('/').map_or((h, None), |(r, t)| (r, Some(t)));
    if let Some(total) = total.filter(|t| *t != "*") {
        num(total)?;
    }
    let (a, b) = range.split_once('-').ok_or(RangeError)?;
    let (start, end) = (num(a)?, num(b)?);
    if end < start {
        return Err(RangeError);
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_forms() {
        assert_eq!(parse_range("bytes=0-9"), Ok(Some(ByteRange::FromTo(0, 9))));
        assert_eq!(parse_range("bytes=5-"), Ok(Some(ByteRange::From(5))));
        assert_eq!(parse_range("bytes=-5"), Ok(Some(ByteRange::Suffix(5))));
        assert_eq!(parse_range("bytes=0-1,4-5"), Ok(None));
        assert_eq!(parse_range("items=0-1"), Ok(None));
        for bad in [
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=9-1",
            "bytes=+1-2",
            "bytes=1",
        ] {
            assert_eq!(parse_range(bad), Err(RangeError), "{bad}");
        }
    }

    #[test]
    fn resolve() {
        assert_eq!(ByteRange::FromTo(0, 99).resolve(10), Ok((0, 9)));
        assert_eq!(ByteRange::From(9).resolve(10), Ok((9, 9)));
        assert_eq!(ByteRange::From(10).resolve(10), Err(Unsatisfiable));
        assert_eq!(ByteRange::Suffix(3).resolve(10), Ok((7, 9)));
        assert_eq!(ByteRange::Suffix(30).resolve(10), Ok((0, 9)));
        assert_eq!(ByteRange::Suffix(0).resolve(10), Err(Unsatisfiable));
        assert_eq!(ByteRange::From(0).resolve(0), Err(Unsatisfiable));
    }

    #[test]
    fn content_range_forms() {
        assert_eq!(parse_content_range("0-9"), Ok((0, 9)));
        assert_eq!(parse_content_range("bytes 10-19/*"), Ok((10, 19)));
        assert_eq!(parse_content_range("bytes 10-19/100"), Ok((10, 19)));
        assert_eq!(parse_content_range("bytes=0-0"), Ok((0, 0)));
        for bad in ["", "0", "9-1", "a-b", "bytes 1-2/x", "-1-2"] {
            assert_eq!(parse_content_range(bad), Err(RangeError), "{bad}");
        }
    }
}
