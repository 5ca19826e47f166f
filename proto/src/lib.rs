//! The protobuf messages of the fsxp protocol, generated from `fs.proto` at build time.
//! Nothing here is written by hand; framing lives in the `protocol` crate.

#![forbid(unsafe_code)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/fsxp.rs"));
