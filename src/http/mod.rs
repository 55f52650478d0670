//! HTTP/1.1 toward workers: a sans-IO codec ([`codec`]) and the monoio client that drives it
//! ([`client`]) with a keep-alive pool per core.

pub mod client;
pub mod codec;
pub mod iovec;
pub mod request;
pub mod url;
