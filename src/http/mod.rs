//! HTTP/1.1 toward workers: a sans-IO codec. The monoio client that drives it, with a
//! keep-alive pool per core, is the dispatcher's (`dispatch::client`): it sends jobs.
//!
//! The codec encodes the head of a job request ([`encode`]) and decodes a worker's response
//! from whatever bytes have arrived so far ([`response_decoder`], built on [`head`] and [`body`]).
//! Nothing in it touches a socket, so the parser can be fuzzed and benchmarked on plain slices
//! (`fuzz/`, `benches/codec.rs`). Layers, lowest first: [`headers`] and [`error`]; `chunk`;
//! [`body`]; [`head`]; [`response_decoder`] and [`encode`]. A file imports only lower ones.

pub mod body;
mod chunk;
pub mod encode;
pub mod error;
pub mod head;
pub mod headers;
pub mod iovec;
pub mod request;
pub mod response_decoder;
pub mod trace;
pub mod url;
