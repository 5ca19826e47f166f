pub mod connection;
#[allow(unsafe_code)]
pub mod read_buffer;
pub mod slots;
