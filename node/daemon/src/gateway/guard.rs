//! Who may use the local API: the one place its rules live.
//!
//! The API listens on loopback by default, where any local process, and any
//! web page the operator's browser opens, can reach it. So, the way local
//! daemons guard themselves:
//! - the `Host` header must name this API (a loopback name and the port, or
//!   the address it is bound to): a DNS-rebinding page sends its own name;
//! - an `Origin` header, when a browser sends one, must be this API's own;
//! - a request a page of another site made without asking (an image, a
//!   script, a frame: a browser sends those without `Origin`) is refused by
//!   the Fetch Metadata browsers add to requests for loopback and HTTPS
//!   addresses (`Sec-Fetch-Site`), so such a page cannot
//!   make the node act (ask validators, look a CID up); the browser's own
//!   navigation (a link followed, an address typed) and the dashboard's own
//!   fetches pass, and programs send no such header. A dataset's files
//!   (`/d/...`) stay embeddable: a notebook's page may show a dataset's
//!   images, and what it embeds it cannot read (no CORS);
//! - every call that changes something (not GET or HEAD), and every call at
//!   all when the API is bound to a non-loopback address, carries the API
//!   token: `Authorization: Bearer <token>`, the token being the content of
//!   `<data_dir>/api.token`, a file readable by the node's user and group
//!   only (like a cookie file);
//! - a pin's body is `application/octet-stream`, which no cross-site
//!   "simple" request can send.
//!
//! Every response carries `X-Content-Type-Options: nosniff` and a
//! restrictive `Content-Security-Policy`.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderValue, ORIGIN};
use hyper::{Method, StatusCode};

use crate::error::{Error, Result};

/// Fetch Metadata request headers (sent by browsers, never by programs).
const SEC_FETCH_SITE: &str = "sec-fetch-site";
const SEC_FETCH_MODE: &str = "sec-fetch-mode";
const SEC_FETCH_DEST: &str = "sec-fetch-dest";
const SEC_PURPOSE: &str = "sec-purpose";
const PURPOSE: &str = "purpose";

/// The file that holds the API token, in the data directory.
pub const TOKEN_FILE: &str = "api.token";

/// Where a node's API token lives.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// The API's rules, for one bound address.
pub struct Guard {
    bound: SocketAddr,
    token: String,
    hosts: Vec<String>,
}

impl Guard {
    /// Reads the token of `data_dir`, making one (mode 0640) the first time.
    pub fn load_or_create(data_dir: &Path, bound: SocketAddr) -> Result<Guard> {
        let path = token_path(data_dir);
        let token = match std::fs::read_to_string(&path) {
            Ok(t) if t.trim().len() >= 32 => t.trim().to_string(),
            _ => {
                let t = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 32]>());
                let tmp = path.with_extension("token.tmp");
                let _ = std::fs::remove_file(&tmp);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o640)
                    .open(&tmp)
                    .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
                f.write_all(t.as_bytes())
                    .and_then(|_| f.sync_all())
                    .and_then(|_| std::fs::rename(&tmp, &path))
                    .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
                t
            }
        };
        let port = bound.port();
        let mut hosts = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        hosts.push(bound.to_string());
        Ok(Guard {
            bound,
            token,
            hosts,
        })
    }

    fn loopback(&self) -> bool {
        self.bound.ip().is_loopback()
    }

    /// Checks a request against the rules; the refusal's status and reason.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> std::result::Result<(), (StatusCode, String)> {
        let forbidden = |why: String| Err((StatusCode::FORBIDDEN, why));
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return forbidden(format!(
                "Host {host:?} is not this node's API ({}); use its address",
                self.bound
            ));
        }
        if let Some(origin) = headers.get(ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let own = origin
                .strip_prefix("http://")
                .is_some_and(|o| self.hosts.iter().any(|h| h.eq_ignore_ascii_case(o)));
            if !own {
                return forbidden(format!("cross-origin request from {origin:?} refused"));
            }
        }
        let reads = *method == Method::GET || *method == Method::HEAD;
        if let Some(site) = headers.get(SEC_FETCH_SITE) {
            let site = site.to_str().unwrap_or("");
            let header_is = |name: &str, want: &str| headers.get(name).is_some_and(|v| v == want);
            // A top-level document the browser navigates to; a frame is a
            // navigation too, but one another site's page makes, and a
            // prefetch (`Sec-Purpose`) is one nobody asked for.
            let navigation = reads
                && header_is(SEC_FETCH_MODE, "navigate")
                && header_is(SEC_FETCH_DEST, "document")
                && !headers.contains_key(SEC_PURPOSE)
                && !headers.contains_key(PURPOSE);
            let own = matches!(site, "same-origin" | "none");
            if !own && !navigation && !path.starts_with("/d/") {
                return forbidden(format!(
                    "{method} {path} requested by a page of another site (Sec-Fetch-Site {site:?}) refused; \
                     open the API's own address"
                ));
            }
        }
        if !reads || !self.loopback() {
            let sent = headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !constant_time_eq(sent.trim().as_bytes(), self.token.as_bytes()) {
                return forbidden(format!(
                    "{method} {path} needs the API token (the node's {TOKEN_FILE}, readable by its user): \
                     `cairn` finds it in the data directory, or pass --api-token-file"
                ));
            }
        }
        if *method == Method::POST && path == "/api/pin" {
            let ct = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if ct != "application/octet-stream" {
                return Err((
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("a pin is sent as application/octet-stream, not {ct:?}"),
                ));
            }
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The security headers of every response; the dashboard's policy lets its
/// own script fetch this API and nothing else.
pub fn harden(headers: &mut HeaderMap, dashboard: bool) {
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(if dashboard {
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        } else {
            "default-src 'none'; sandbox; frame-ancestors 'none'"
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hosts_origins_tokens_and_types() {
        let d = tempfile::tempdir().unwrap();
        let g = Guard::load_or_create(d.path(), "127.0.0.1:7441".parse().unwrap()).unwrap();
        let token = std::fs::read_to_string(token_path(d.path())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(token_path(d.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        let again = Guard::load_or_create(d.path(), "127.0.0.1:7441".parse().unwrap()).unwrap();
        assert_eq!(again.token, token, "kept across restarts");
        let get = |h: &HeaderMap| g.check(&Method::GET, "/api/info", h);
        assert!(get(&headers(&[("host", "127.0.0.1:7441")])).is_ok());
        assert!(get(&headers(&[("host", "localhost:7441")])).is_ok());
        assert_eq!(
            get(&headers(&[("host", "evil.example")])).unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        assert!(get(&headers(&[])).is_err());
        assert!(
            get(&headers(&[
                ("host", "127.0.0.1:7441"),
                ("origin", "http://evil.example")
            ]))
            .is_err()
        );
        assert!(
            get(&headers(&[
                ("host", "127.0.0.1:7441"),
                ("origin", "http://127.0.0.1:7441")
            ]))
            .is_ok()
        );
        // Fetch Metadata: another site's image, script or frame is refused,
        // except a dataset's file; a navigation and the API's own page pass.
        let host = ("host", "127.0.0.1:7441");
        let from = |site: &'static str, mode: &'static str, dest: &'static str| {
            headers(&[
                host,
                ("sec-fetch-site", site),
                ("sec-fetch-mode", mode),
                ("sec-fetch-dest", dest),
            ])
        };
        for (site, mode, dest) in [
            ("cross-site", "no-cors", "image"),
            ("cross-site", "no-cors", "script"),
            ("same-site", "no-cors", "image"),
            ("cross-site", "navigate", "iframe"),
        ] {
            let (status, why) = get(&from(site, mode, dest)).unwrap_err();
            assert_eq!(status, StatusCode::FORBIDDEN, "{site} {mode} {dest}");
            assert!(why.contains("another site"), "{why}");
        }
        assert!(get(&from("cross-site", "navigate", "document")).is_ok());
        let mut prefetch = from("cross-site", "navigate", "document");
        prefetch.insert("sec-purpose", HeaderValue::from_static("prefetch"));
        assert!(get(&prefetch).is_err(), "a prefetch is no navigation");
        let mut modeless = from("cross-site", "navigate", "document");
        modeless.remove("sec-fetch-dest");
        assert!(
            get(&modeless).is_err(),
            "a navigation without its destination"
        );
        assert!(get(&from("none", "navigate", "document")).is_ok());
        assert!(get(&from("same-origin", "cors", "empty")).is_ok());
        let file = |h: &HeaderMap| g.check(&Method::GET, "/d/cairn1x/a.png", h);
        assert!(file(&from("cross-site", "no-cors", "image")).is_ok());
        let (_, why) = g
            .check(
                &Method::POST,
                "/api/pin",
                &from("cross-site", "navigate", "document"),
            )
            .unwrap_err();
        assert!(
            why.contains("another site"),
            "a form posted from another site is no navigation that passes: {why}"
        );
        let bearer = format!("Bearer {token}");
        let del = |h: &HeaderMap| g.check(&Method::DELETE, "/api/datasets/x", h);
        assert!(del(&headers(&[("host", "127.0.0.1:7441")])).is_err());
        assert!(
            del(&headers(&[
                ("host", "127.0.0.1:7441"),
                ("authorization", "Bearer wrong")
            ]))
            .is_err()
        );
        assert!(
            del(&headers(&[
                ("host", "127.0.0.1:7441"),
                ("authorization", &bearer)
            ]))
            .is_ok()
        );
        let pin = |h: &HeaderMap| g.check(&Method::POST, "/api/pin", h);
        assert_eq!(
            pin(&headers(&[
                ("host", "127.0.0.1:7441"),
                ("authorization", &bearer),
                ("content-type", "text/plain")
            ]))
            .unwrap_err()
            .0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        // Bound to a LAN address, reads need the token too.
        let lan = Guard::load_or_create(d.path(), "192.168.1.5:7441".parse().unwrap()).unwrap();
        let h = headers(&[("host", "192.168.1.5:7441")]);
        assert!(lan.check(&Method::GET, "/d/x", &h).is_err());
        let h = headers(&[("host", "192.168.1.5:7441"), ("authorization", &bearer)]);
        assert!(lan.check(&Method::GET, "/d/x", &h).is_ok());
    }
}
