//! Request boundaries in the bytes a keep-alive connection receives. The server may only
//! hand a connection's socket back from hyper when everything read so far forms whole
//! requests: a half-received request would otherwise be lost with hyper's buffer.
//!
//! Only the framing hyper itself applies to our traffic is followed (a head, then a
//! `Content-Length` body). Anything else (chunked bodies, upgrades, unparsable or huge
//! heads) stops the tracking for the rest of the connection, which then simply stays
//! with hyper: correct, only not parked.

use std::mem::MaybeUninit;

/// hyper's own limit on request headers; a longer head gets a 431 from hyper anyway.
const MAX_HEADERS: usize = 100;

/// Heads split across reads are copied until this size; past it we stop tracking.
const MAX_TRACKED_HEAD: usize = 64 * 1024;

/// Follows the bytes a connection receives to tell where each request ends: a head,
/// then a `Content-Length` body.
#[derive(Debug, Default)]
pub struct RequestFraming {
    state: State,
    /// The start of a head that has not fully arrived (empty almost always).
    partial_head: Vec<u8>,
    completed: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Head,
    Body {
        left: u64,
    },
    Untracked,
}

enum Head {
    Complete { len: usize, body: u64 },
    Partial,
    Untrackable,
}

impl RequestFraming {
    /// Requests received in full so far.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// True when every byte observed belongs to a request received in full.
    pub fn at_boundary(&self) -> bool {
        self.state == State::Head && self.partial_head.is_empty()
    }

    /// Follows the next bytes read from the connection, in order.
    pub fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Untracked => return,
                State::Body { left } => {
                    let taken = usize::try_from(left).map_or(bytes.len(), |l| l.min(bytes.len()));
                    self.expect_body(left - taken as u64);
                    &bytes[taken..]
                }
                State::Head => self.read_head(bytes),
            };
        }
    }

    /// Consumes head bytes; returns what follows the head.
    fn read_head<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let carried = self.partial_head.len();
        let head = if carried == 0 {
            parse_head(bytes)
        } else {
            self.partial_head.extend_from_slice(bytes);
            parse_head(&self.partial_head)
        };
        match head {
            Head::Complete { len, body } => {
                self.partial_head = Vec::new();
                self.expect_body(body);
                // The carried part held no complete head, so `len` reaches into `bytes`.
                bytes.get(len.saturating_sub(carried)..).unwrap_or(&[])
            }
            Head::Partial => {
                if carried == 0 {
                    self.partial_head.extend_from_slice(bytes);
                }
                if self.partial_head.len() > MAX_TRACKED_HEAD {
                    self.stop_tracking();
                }
                &[]
            }
            Head::Untrackable => {
                self.stop_tracking();
                &[]
            }
        }
    }

    fn expect_body(&mut self, left: u64) {
        if left == 0 {
            self.completed += 1;
            self.state = State::Head;
        } else {
            self.state = State::Body { left };
        }
    }

    fn stop_tracking(&mut self) {
        self.state = State::Untracked;
        self.partial_head = Vec::new();
    }
}

fn parse_head(bytes: &[u8]) -> Head {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(bytes, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Untrackable,
    };
    if request.method == Some("CONNECT") {
        return Head::Untrackable;
    }
    let mut body = None;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("transfer-encoding") || name.eq_ignore_ascii_case("upgrade") {
            return Head::Untrackable;
        }
        if name.eq_ignore_ascii_case("content-length") {
            match (body, content_length(header.value)) {
                (None, Some(length)) => body = Some(length),
                _ => return Head::Untrackable,
            }
        }
    }
    Head::Complete {
        len,
        body: body.unwrap_or(0),
    }
}

/// A `Content-Length` value as hyper reads it: digits only (`u64::from_str` would also take
/// `+5`, which hyper refuses), surrounding spaces allowed.
fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST: &[u8] =
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{\"a\":\"bcd\"}";
    const GET: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

    fn stream() -> Vec<u8> {
        [POST, GET, POST].concat()
    }

    #[test]
    fn whole_requests_in_one_read_are_counted() {
        let mut framing = RequestFraming::default();
        framing.observe(&stream());
        assert_eq!(framing.completed(), 3);
        assert!(framing.at_boundary());
    }

    #[test]
    fn every_split_point_gives_the_same_boundaries() {
        let stream = stream();
        let ends = [POST.len(), POST.len() + GET.len(), stream.len()];
        for split in 0..=stream.len() {
            let mut framing = RequestFraming::default();
            framing.observe(&stream[..split]);
            let expected = ends.iter().filter(|&&end| end <= split).count() as u64;
            assert_eq!(framing.completed(), expected, "split at {split}");
            assert_eq!(
                framing.at_boundary(),
                split == 0 || ends.contains(&split),
                "split at {split}"
            );
            framing.observe(&stream[split..]);
            assert_eq!(framing.completed(), 3, "split at {split}");
            assert!(framing.at_boundary(), "split at {split}");
        }
    }

    #[test]
    fn byte_by_byte_arrival_is_followed() {
        let mut framing = RequestFraming::default();
        for byte in stream() {
            framing.observe(&[byte]);
        }
        assert_eq!(framing.completed(), 3);
        assert!(framing.at_boundary());
    }

    #[test]
    fn a_request_missing_body_bytes_is_not_a_boundary() {
        let mut framing = RequestFraming::default();
        framing.observe(&POST[..POST.len() - 1]);
        assert_eq!(framing.completed(), 0);
        assert!(!framing.at_boundary());
    }

    #[test]
    fn framing_hyper_applies_differently_stops_tracking() {
        let untrackable: [&[u8]; 5] = [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"POST / HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"NOT HTTP\0\r\n\r\n",
        ];
        for bytes in untrackable {
            let mut framing = RequestFraming::default();
            framing.observe(bytes);
            framing.observe(GET);
            assert!(
                !framing.at_boundary() && framing.completed() == 0,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn a_signed_content_length_stops_tracking_as_hyper_refuses_it() {
        let mut framing = RequestFraming::default();
        framing.observe(b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx");
        framing.observe(GET);
        assert!(!framing.at_boundary());
        assert_eq!(framing.completed(), 0);
    }

    #[test]
    fn an_endless_head_stops_tracking_instead_of_growing() {
        let mut framing = RequestFraming::default();
        framing.observe(b"GET / HTTP/1.1\r\n");
        let header = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        for _ in 0..(MAX_TRACKED_HEAD / header.len() + 2) {
            framing.observe(header);
        }
        assert_eq!(framing.state, State::Untracked);
        assert!(framing.partial_head.capacity() == 0);
        framing.observe(b"\r\n");
        assert!(!framing.at_boundary());
    }
}
