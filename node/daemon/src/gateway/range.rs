//! HTTP `Range` headers and the paths of gateway URLs.

use percent_encoding::percent_decode_str;

/// Parses a single `bytes=` range against a length; `None` means "serve it all".
pub fn parse_range(h: &str, len: u64) -> Option<std::result::Result<(u64, u64), ()>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if len == 0 {
        // No byte of an empty file can be asked for, not even a suffix.
        return Some(Err(()));
    }
    if spec.contains(',') {
        return None; // several ranges: serve the whole entity (RFC 9110 allows it)
    }
    let (a, b) = spec.split_once('-')?;
    let r = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return Some(Err(()));
        }
        (len.saturating_sub(n), len)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len
        } else {
            b.parse::<u64>().ok()?.saturating_add(1).min(len)
        };
        if start >= len || start >= end {
            return Some(Err(()));
        }
        (start, end)
    };
    Some(Ok(r))
}

/// A file path of a gateway URL, percent-decoded (`None` if it is not UTF-8).
pub fn decode_path(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 100))));
        assert_eq!(parse_range("bytes=-5", 100), Some(Ok((95, 100))));
        assert_eq!(parse_range("bytes=50-1000", 100), Some(Ok((50, 100))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        // an empty file has no range, a suffix one included
        assert_eq!(parse_range("bytes=-5", 0), Some(Err(())));
        assert_eq!(parse_range("bytes=0-", 0), Some(Err(())));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode_path("a%20b/c%2Fd").unwrap(), "a b/c/d");
        assert_eq!(decode_path("100%").unwrap(), "100%");
        assert_eq!(decode_path("%zz").unwrap(), "%zz");
        assert!(decode_path("%ff").is_none());
    }
}
