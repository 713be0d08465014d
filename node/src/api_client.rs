//! A small blocking HTTP/1.1 client for the local API: what the `cairn` CLI
//! uses to talk to its daemon. One request per connection; request bodies
//! stream from a reader with a known length; response bodies stream to the
//! caller (content-length, chunked, or until close).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::{Error, Result};

/// Where the daemon's API listens.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub addr: SocketAddr,
}

/// A response whose body has not been read yet.
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    body: BodyReader,
}

enum BodyKind {
    Length(u64),
    Chunked { left_in_chunk: u64, done: bool },
    UntilClose,
}

struct BodyReader {
    inner: BufReader<TcpStream>,
    kind: BodyKind,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.kind {
            BodyKind::Length(left) => {
                if *left == 0 || buf.is_empty() {
                    return Ok(0);
                }
                let n = (*left).min(buf.len() as u64) as usize;
                let got = self.inner.read(&mut buf[..n])?;
                if got == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "the transfer broke off with {left} bytes still to come: the daemon could not read the rest \
                             (too few miners answering? `cairn status` shows which); nothing was kept"
                        ),
                    ));
                }
                *left -= got as u64;
                Ok(got)
            }
            BodyKind::UntilClose => self.inner.read(buf),
            BodyKind::Chunked {
                left_in_chunk,
                done,
            } => {
                if *done {
                    return Ok(0);
                }
                if *left_in_chunk == 0 {
                    let mut line = String::new();
                    self.inner.read_line(&mut line)?;
                    if line.trim().is_empty() {
                        line.clear();
                        self.inner.read_line(&mut line)?;
                    }
                    let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "the response broke off (bad chunk header): the daemon hit an error mid-stream; see its log",
                        )
                    })?;
                    if size == 0 {
                        *done = true;
                        return Ok(0);
                    }
                    *left_in_chunk = size;
                }
                let n = (*left_in_chunk).min(buf.len() as u64) as usize;
                let got = self.inner.read(&mut buf[..n])?;
                if got == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the response broke off: the daemon hit an error mid-stream; see its log",
                    ));
                }
                *left_in_chunk -= got as u64;
                if *left_in_chunk == 0 {
                    let mut crlf = [0u8; 2];
                    self.inner.read_exact(&mut crlf)?;
                }
                Ok(got)
            }
        }
    }
}

impl ApiResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as a reader.
    pub fn reader(&mut self) -> &mut dyn Read {
        &mut self.body
    }

    /// The whole body as JSON; an error status becomes an error carrying the
    /// daemon's message.
    pub fn json(mut self) -> Result<serde_json::Value> {
        let mut s = String::new();
        self.body
            .read_to_string(&mut s)
            .map_err(|e| Error::io("reading the daemon's reply", e))?;
        let v: serde_json::Value = serde_json::from_str(&s).map_err(|_| {
            Error::Other(format!("the daemon replied {}: {}", self.status, s.trim()))
        })?;
        if self.status >= 400 {
            let msg = v["error"].as_str().unwrap_or(s.trim()).to_string();
            return Err(Error::Other(msg));
        }
        Ok(v)
    }

    /// Fails with the daemon's message unless the status is a success.
    pub fn ok(self) -> Result<ApiResponse> {
        if self.status >= 400 {
            return Err(self
                .json()
                .err()
                .unwrap_or_else(|| Error::Other("request failed".into())));
        }
        Ok(self)
    }
}

impl ApiClient {
    pub fn new(addr: SocketAddr) -> Self {
        ApiClient { addr }
    }

    fn connect(&self) -> Result<TcpStream> {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).map_err(|e| {
            Error::Other(format!(
                "cannot reach the cairn daemon's API at {}: {e}; is `cairn run` (or `cairn devnet up`) running? \
                 Point the CLI elsewhere with --api or CAIRN_API",
                self.addr
            ))
        })?;
        s.set_nodelay(true).ok();
        Ok(s)
    }

    /// Sends a request; `body` streams `len` bytes, calling `progress` with
    /// the running count. Returns once the response headers are in.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<(&mut dyn Read, u64)>,
        mut progress: impl FnMut(u64),
    ) -> Result<ApiResponse> {
        let mut stream = self.connect()?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let len = body.as_ref().map(|b| b.1).unwrap_or(0);
        head.push_str(&format!("Content-Length: {len}\r\n\r\n"));
        let io = |e: std::io::Error| Error::io("sending to the daemon", e);
        stream.write_all(head.as_bytes()).map_err(io)?;
        let mut send_error = None;
        if let Some((reader, len)) = body {
            let mut buf = vec![0u8; 256 * 1024];
            let mut sent = 0u64;
            while sent < len {
                let want = ((len - sent) as usize).min(buf.len());
                let n = match reader.read(&mut buf[..want]) {
                    Ok(0) => {
                        return Err(Error::Other(format!(
                            "input ended after {sent} of {len} bytes: a file changed while it was being sent; nothing was pinned"
                        )));
                    }
                    Ok(n) => n,
                    Err(e) => return Err(Error::io("reading input", e)),
                };
                if let Err(e) = stream.write_all(&buf[..n]) {
                    // The daemon may have answered early (an error); read it below.
                    send_error = Some(e);
                    break;
                }
                sent += n as u64;
                progress(sent);
            }
        }
        let mut reader = BufReader::with_capacity(256 * 1024, stream);
        let mut status_line = String::new();
        match reader.read_line(&mut status_line) {
            Ok(0) | Err(_) => {
                return Err(match send_error {
                    Some(e) => Error::io("sending to the daemon", e),
                    None => Error::Other("the daemon closed the connection without a reply".into()),
                });
            }
            Ok(_) => {}
        }
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Other(format!("bad reply from the daemon: {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader
                .read_line(&mut line)
                .map_err(|e| Error::io("reading the daemon's reply", e))?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let find = |n: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let kind = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            BodyKind::Chunked {
                left_in_chunk: 0,
                done: false,
            }
        } else if let Some(l) = find("content-length").and_then(|v| v.parse().ok()) {
            BodyKind::Length(l)
        } else {
            BodyKind::UntilClose
        };
        Ok(ApiResponse {
            status,
            headers,
            body: BodyReader {
                inner: reader,
                kind,
            },
        })
    }

    /// GET and parse JSON.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        self.request("GET", path, &[], None, |_| {})?.json()
    }

    /// DELETE and parse JSON.
    pub fn delete_json(&self, path: &str) -> Result<serde_json::Value> {
        self.request("DELETE", path, &[], None, |_| {})?.json()
    }
}
