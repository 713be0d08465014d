//! Frames on QUIC streams: the reader checks a frame's announced length
//! against the caller's limit before allocating (the codec itself is
//! `cairn_proto::wire`, pure).

use cairn_proto::wire;
use iroh::endpoint::{RecvStream, SendStream};

use crate::error::{Error, Result};
use cairn_proto::NodeId;

/// Outcome of reading a frame from a stream.
#[derive(Debug)]
pub enum ReadFrame {
    Body(Vec<u8>),
    /// The stream ended cleanly before a frame started.
    End,
    /// The length prefix exceeds the limit; nothing was allocated.
    TooLarge {
        len: u64,
        limit: usize,
    },
    /// The stream ended inside a frame.
    Truncated,
}

fn stream_err(peer: &NodeId, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Peer {
        peer: peer.fmt_short().to_string(),
        // A stream error may carry the peer's close reason, its own text.
        message: super::printable(&format!("{what}: {e}")),
    }
}

/// Reads one frame body, refusing lengths over `limit` before allocating.
pub async fn read_frame(recv: &mut RecvStream, limit: usize, peer: &NodeId) -> Result<ReadFrame> {
    read_frame_timed(recv, limit, peer).await.map(|(f, _)| f)
}

/// [`read_frame`], also telling when the frame's first byte arrived.
pub async fn read_frame_timed(
    recv: &mut RecvStream,
    limit: usize,
    peer: &NodeId,
) -> Result<(ReadFrame, Option<std::time::Instant>)> {
    let mut first = None;
    let frame = read_frame_inner(recv, limit, peer, &mut first).await?;
    Ok((frame, first))
}

async fn read_frame_inner(
    recv: &mut RecvStream,
    limit: usize,
    peer: &NodeId,
    first: &mut Option<std::time::Instant>,
) -> Result<ReadFrame> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match recv.read(&mut prefix[got..]).await {
            Ok(Some(n)) => {
                first.get_or_insert_with(std::time::Instant::now);
                got += n
            }
            Ok(None) if got == 0 => return Ok(ReadFrame::End),
            Ok(None) => return Ok(ReadFrame::Truncated),
            Err(e) => return Err(stream_err(peer, "reading a frame", e)),
        }
    }
    let len = wire::frame_len(prefix);
    if len > limit as u64 {
        return Ok(ReadFrame::TooLarge { len, limit });
    }
    let mut body = vec![0u8; len as usize];
    match recv.read_exact(&mut body).await {
        Ok(()) => Ok(ReadFrame::Body(body)),
        Err(iroh::endpoint::ReadExactError::FinishedEarly(_)) => Ok(ReadFrame::Truncated),
        Err(e) => Err(stream_err(peer, "reading a frame", e)),
    }
}

/// Writes a complete frame.
pub async fn write_frame(send: &mut SendStream, frame: &[u8], peer: &NodeId) -> Result<()> {
    send.write_all(frame)
        .await
        .map_err(|e| stream_err(peer, "writing a frame", e))
}
