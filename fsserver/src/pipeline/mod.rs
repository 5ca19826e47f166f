pub mod connection;
pub mod lane;
#[allow(unsafe_code)]
pub mod read_buffer;
pub mod slots;
