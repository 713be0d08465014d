//! The pin body's header: a big-endian u32 length, then that many bytes of
//! JSON [`PinRequest`]; the files follow. Both ends use these two functions,
//! so the framing lives in one place; the daemon decodes it from bytes a
//! client sent, so the decoder is bounded ([`MAX_PIN_HEADER`]) before it
//! waits for more and is a fuzz target (`pin_header`).

use crate::{ApiError, MAX_PIN_HEADER, PinRequest};

/// The header as it goes on the wire, length prefix included.
pub fn encode_pin_header(header: &PinRequest) -> Result<Vec<u8>, ApiError> {
    let json = serde_json::to_vec(header).expect("a pin request serializes");
    let len = u32::try_from(json.len())
        .ok()
        .filter(|n| *n <= MAX_PIN_HEADER)
        .ok_or(ApiError::PinHeaderTooLarge {
            len: json.len() as u64,
        })?;
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// The header at the start of `buf` and the bytes it took, or `None` while
/// `buf` is shorter than the header it announces. A length above
/// [`MAX_PIN_HEADER`] is refused as soon as the 4 bytes are there, so a
/// reader never buffers more than that.
pub fn decode_pin_header(buf: &[u8]) -> Result<Option<(PinRequest, usize)>, ApiError> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix);
    if len > MAX_PIN_HEADER {
        return Err(ApiError::PinHeaderTooLarge {
            len: u64::from(len),
        });
    }
    let end = 4 + len as usize;
    let Some(json) = buf.get(4..end) else {
        return Ok(None);
    };
    let header = serde_json::from_slice(json).map_err(|e| ApiError::BadPinHeader(e.to_string()))?;
    Ok(Some((header, end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileSpec;

    #[test]
    fn round_trip_and_partial_input() {
        let header = PinRequest {
            name: "set".into(),
            files: vec![FileSpec {
                path: "a/b.bin".into(),
                size: 7,
                executable: false,
                dir: false,
            }],
            ..Default::default()
        };
        let mut bytes = encode_pin_header(&header).unwrap();
        let n = bytes.len();
        bytes.extend_from_slice(b"file bytes");
        for cut in 0..n {
            assert!(decode_pin_header(&bytes[..cut]).unwrap().is_none());
        }
        let (back, used) = decode_pin_header(&bytes).unwrap().unwrap();
        assert_eq!(used, n);
        assert_eq!(back, header);
    }

    #[test]
    fn refuses_a_long_header_from_its_prefix_alone() {
        let prefix = (MAX_PIN_HEADER + 1).to_be_bytes();
        assert!(matches!(
            decode_pin_header(&prefix),
            Err(ApiError::PinHeaderTooLarge { len }) if len == u64::from(MAX_PIN_HEADER) + 1
        ));
        let mut bad = 3u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"{x}");
        assert!(matches!(
            decode_pin_header(&bad),
            Err(ApiError::BadPinHeader(_))
        ));
    }
}
