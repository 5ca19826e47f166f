pub mod admission;
#[allow(unsafe_code)]
pub mod credentials;
pub mod handshake;
pub mod tls;
pub mod token;
pub mod transport;
