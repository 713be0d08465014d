//! The streaming segmenter: any chunking of the input in, fixed-size segments out.

/// One segment of the stream: its position and its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// 0-based segment number.
    pub index: u64,
    /// Offset of the first byte in the stream.
    pub offset: u64,
    /// The bytes; `segment_size` long except for the last segment.
    pub bytes: &'a [u8],
}

/// Cuts a byte stream into segments of `segment_size` bytes, the last one shorter.
///
/// The segmenter owns one buffer of `segment_size` bytes, allocated once. Input
/// arrives either by copy ([`Segmenter::push`]) or by reading straight into the
/// buffer ([`Segmenter::unfilled`] + [`Segmenter::advance`]), which saves a copy
/// when the source is a file.
#[derive(Debug)]
pub struct Segmenter {
    buf: Vec<u8>,
    filled: usize,
    next_index: u64,
    next_offset: u64,
}

impl Segmenter {
    /// A segmenter for segments of `segment_size` bytes (take it from
    /// [`crate::Params::segment_size`]). Panics if `segment_size` is 0.
    pub fn new(segment_size: usize) -> Self {
        assert!(segment_size > 0, "segment size must be positive");
        Segmenter {
            buf: vec![0; segment_size],
            filled: 0,
            next_index: 0,
            next_offset: 0,
        }
    }

    /// Bytes per full segment.
    pub fn segment_size(&self) -> usize {
        self.buf.len()
    }

    /// Total bytes accepted so far.
    pub fn stream_len(&self) -> u64 {
        self.next_offset + self.filled as u64
    }

    /// Copies `input` in, calling `sink` with every segment that becomes full.
    pub fn push<E>(
        &mut self,
        mut input: &[u8],
        mut sink: impl FnMut(Segment<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        while !input.is_empty() {
            let room = self.unfilled();
            let n = room.len().min(input.len());
            room[..n].copy_from_slice(&input[..n]);
            input = &input[n..];
            if let Some(segment) = self.advance(n) {
                sink(segment)?;
            }
        }
        Ok(())
    }

    /// The free part of the current segment, to read into directly. Never empty.
    pub fn unfilled(&mut self) -> &mut [u8] {
        &mut self.buf[self.filled..]
    }

    /// Marks `n` bytes of [`Segmenter::unfilled`] as filled; returns the segment
    /// if it is now full. Panics if `n` exceeds the free space.
    pub fn advance(&mut self, n: usize) -> Option<Segment<'_>> {
        assert!(
            n <= self.buf.len() - self.filled,
            "advance past segment end"
        );
        self.filled += n;
        if self.filled == self.buf.len() {
            Some(self.emit())
        } else {
            None
        }
    }

    /// Ends the stream: returns the last, short segment if any bytes are pending.
    /// A stream whose length is a multiple of the segment size (including the
    /// empty stream) has no short segment.
    pub fn finish(&mut self) -> Option<Segment<'_>> {
        if self.filled == 0 {
            None
        } else {
            Some(self.emit())
        }
    }

    fn emit(&mut self) -> Segment<'_> {
        let len = self.filled;
        let segment = Segment {
            index: self.next_index,
            offset: self.next_offset,
            bytes: &self.buf[..len],
        };
        self.next_index += 1;
        self.next_offset += len as u64;
        self.filled = 0;
        segment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(size: usize, input: &[u8], chunks: &[usize]) -> Vec<(u64, u64, Vec<u8>)> {
        let mut s = Segmenter::new(size);
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks[i % chunks.len()].clamp(1, rest.len());
            s.push::<()>(&rest[..n], |seg| {
                out.push((seg.index, seg.offset, seg.bytes.to_vec()));
                Ok(())
            })
            .unwrap();
            rest = &rest[n..];
            i += 1;
        }
        if let Some(seg) = s.finish() {
            out.push((seg.index, seg.offset, seg.bytes.to_vec()));
        }
        out
    }

    #[test]
    fn segments_have_fixed_size_and_a_short_tail() {
        let input: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let segs = collect(1000, &input, &[7, 333, 1, 4096]);
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[0].2.len(), 1000);
        assert_eq!(segs[2].2.len(), 500);
        assert_eq!(segs[2].1, 2000);
        assert_eq!(segs.concat_bytes(), input);
    }

    #[test]
    fn exact_multiple_and_empty_streams_have_no_short_segment() {
        assert!(collect(100, &[], &[1]).is_empty());
        let segs = collect(100, &[9; 200], &[50]);
        assert_eq!(segs.len(), 2);
        assert!(segs.iter().all(|s| s.2.len() == 100));
    }

    #[test]
    fn reading_into_the_buffer_matches_push() {
        let input: Vec<u8> = (0..777u32).map(|i| (i * 7) as u8).collect();
        let mut s = Segmenter::new(256);
        let mut out = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            let room = s.unfilled();
            let n = room.len().min(rest.len()).min(100);
            room[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            if let Some(seg) = s.advance(n) {
                out.extend_from_slice(seg.bytes);
            }
        }
        assert_eq!(s.stream_len(), 777);
        out.extend_from_slice(s.finish().unwrap().bytes);
        assert_eq!(out, input);
    }

    trait Concat {
        fn concat_bytes(&self) -> Vec<u8>;
    }
    impl Concat for Vec<(u64, u64, Vec<u8>)> {
        fn concat_bytes(&self) -> Vec<u8> {
            self.iter().flat_map(|s| s.2.iter().copied()).collect()
        }
    }
}
