//! A two-part request buffer (head, then payload) for one vectored write, so the payload goes
//! to the socket straight from the bytes the source read: no copy into a send buffer.
//!
//! This is the one place outside the LMDB store that needs `unsafe`: monoio's `IoVecBuf` is an
//! unsafe trait because the kernel reads the iovecs after the call returns.
#![allow(unsafe_code)]

use bytes::Bytes;
use monoio::buf::IoVecBuf;

/// Owns the head and payload of a request, plus the iovecs pointing at them.
pub struct RequestBufs {
    head: Vec<u8>,
    body: Bytes,
    // Boxed: the write op may move this struct after taking the iovec pointer, so the array
    // must live on the heap where moving the struct does not move it.
    iov: Box<[libc::iovec; 2]>,
}

impl RequestBufs {
    /// Wraps a rendered head and the payload.
    pub fn new(head: Vec<u8>, body: Bytes) -> Self {
        let iov = Box::new([
            libc::iovec {
                iov_base: head.as_ptr() as *mut _,
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: body.as_ptr() as *mut _,
                iov_len: body.len(),
            },
        ]);
        RequestBufs { head, body, iov }
    }

    /// Gives the head buffer back for reuse.
    pub fn into_head(self) -> Vec<u8> {
        let RequestBufs { head, body, .. } = self;
        drop(body);
        head
    }

    /// Bytes still to write.
    pub fn remaining(&self) -> usize {
        self.iov[0].iov_len + self.iov[1].iov_len
    }

    /// Marks `n` bytes as written (after a short write), moving the iovecs forward.
    pub fn advance(&mut self, mut n: usize) {
        for v in self.iov.iter_mut() {
            let step = n.min(v.iov_len);
            // wrapping_add stays within the same allocation here because step <= iov_len.
            v.iov_base = (v.iov_base as *mut u8).wrapping_add(step) as *mut _;
            v.iov_len -= step;
            n -= step;
        }
    }
}

// SAFETY: the iovec array is boxed, so its address is stable while the op owns this struct.
// The iovecs point into the heap allocations of `head` (a Vec) and `body` (Bytes),
// which this struct owns and never mutates or reallocates while it exists; moving the struct
// does not move those allocations. `advance` only moves a pointer forward within its buffer and
// shrinks the length by the same amount, so every iovec stays inside a live allocation. The
// whole struct is handed to the write op, which keeps it alive until the kernel is done.
unsafe impl IoVecBuf for RequestBufs {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iov.len()
    }
}
