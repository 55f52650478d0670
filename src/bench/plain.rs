//! What the benches of remote sources share: the plain single-loop consumer's report and its
//! one POST per job on a new connection (the consumer people write first).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

/// What the plain consumer did.
#[derive(Debug, Clone)]
pub struct PlainReport {
    /// What its loop does, e.g. "receive, POST, delete".
    pub how: &'static str,
    /// Messages done.
    pub done: u64,
    /// Time to drain the queue.
    pub elapsed: Duration,
    /// Jobs never done.
    pub lost: u64,
    /// Second successes.
    pub duplicates: u64,
}

impl std::fmt::Display for PlainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.done as f64 / self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "plain single-loop consumer ({}): {rate:.0} jobs/s, {} done, {} lost, {} duplicates",
            self.how, self.done, self.lost, self.duplicates
        )
    }
}

/// One POST on a new connection; true on a 2xx.
pub(super) fn post_once(addr: &str, body: &str, attempt: &str) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST /work HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nX-Reprow-Attempt: {attempt}\r\n\r\n{body}",
        body.len()
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    Ok(head.starts_with(b"HTTP/1.1 2"))
}
