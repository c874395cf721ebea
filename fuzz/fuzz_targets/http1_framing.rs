//! The request-boundary tracker that decides when a keep-alive connection may be parked.
//!
//! Input: one byte giving the size of each read (0: everything in one read), then the
//! bytes a client sends. At checkpoints between reads, the tracker's state must equal
//! that of a tracker given the same bytes in one read (arrival does not matter), and
//! must match a plain reading of those bytes with httparse under hyper's framing rules:
//! the requests counted are exactly the whole ones, and "at a boundary" holds exactly
//! when the bytes end where a request ends.

#![no_main]

use chat_analytics::http_server::fuzzing::RequestFraming;
use libfuzzer_sys::fuzz_target;

/// Heads longer than the tracker's 64 KiB limit stop tracking only when split over
/// reads, by design; shorter input keeps the properties exact.
const MAX_STREAM: usize = 60 * 1024;

/// Enough checkpoints to cover every phase of a stream without going quadratic.
const MAX_CHECKPOINTS: usize = 64;

fuzz_target!(|input: &[u8]| {
    let Some((&read_size, stream)) = input.split_first() else {
        return;
    };
    let stream = &stream[..stream.len().min(MAX_STREAM)];
    let read_size = if read_size == 0 {
        stream.len().max(1)
    } else {
        usize::from(read_size)
    };
    let reads = stream.len().div_ceil(read_size);
    let every = reads.div_ceil(MAX_CHECKPOINTS).max(1);

    let mut framing = RequestFraming::default();
    let mut previous_completed = 0;
    for (i, chunk) in stream.chunks(read_size).enumerate() {
        framing.observe(chunk);
        assert!(framing.completed() >= previous_completed);
        previous_completed = framing.completed();
        let received = (i * read_size + chunk.len()).min(stream.len());
        if (i + 1) % every == 0 || received == stream.len() {
            check(&framing, &stream[..received]);
        }
    }
});

fn check(framing: &RequestFraming, received: &[u8]) {
    let mut whole = RequestFraming::default();
    whole.observe(received);
    assert_eq!(
        (framing.completed(), framing.at_boundary()),
        (whole.completed(), whole.at_boundary()),
        "depends on how the bytes arrived"
    );
    let expected = reference(received);
    assert_eq!(
        framing.completed(),
        expected.whole_requests,
        "whole requests in {:?}",
        String::from_utf8_lossy(received)
    );
    assert_eq!(
        framing.at_boundary(),
        expected.at_boundary,
        "boundary after {:?}",
        String::from_utf8_lossy(received)
    );
}

struct Expected {
    whole_requests: u64,
    at_boundary: bool,
}

/// Reads `bytes` from the start, one request after another, the way hyper frames them;
/// stops at the first request whose framing is not a plain `Content-Length` (chunked,
/// upgrade, CONNECT, a length hyper would refuse or that repeats) or whose head does
/// not parse: from there on nothing is a boundary.
fn reference(bytes: &[u8]) -> Expected {
    let mut at = 0;
    let mut whole_requests = 0;
    loop {
        if at == bytes.len() {
            return Expected {
                whole_requests,
                at_boundary: true,
            };
        }
        let unfinished = Expected {
            whole_requests,
            at_boundary: false,
        };
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut request = httparse::Request::new(&mut headers);
        let head = match request.parse(&bytes[at..]) {
            Ok(httparse::Status::Complete(head)) => head,
            Ok(httparse::Status::Partial) | Err(_) => return unfinished,
        };
        let Some(body) = plain_body_length(&request) else {
            return unfinished;
        };
        let end = ((at + head) as u64).saturating_add(body);
        if end > bytes.len() as u64 {
            return unfinished;
        }
        at = end as usize;
        whole_requests += 1;
    }
}

/// The body length of a request framed by at most one `Content-Length` of plain digits
/// (hyper's rule), `None` for any other framing.
fn plain_body_length(request: &httparse::Request<'_, '_>) -> Option<u64> {
    if request.method == Some("CONNECT") {
        return None;
    }
    let mut length = None;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("transfer-encoding") || name.eq_ignore_ascii_case("upgrade") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return None;
            }
            let digits = header.value.trim_ascii();
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            length = Some(std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?);
        }
    }
    Some(length.unwrap_or(0))
}
