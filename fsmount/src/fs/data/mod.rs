//! File data: the block cache (`block_cache`), reads and read-ahead (`read`,
//! `read_ahead`), writes (`write`), gathered into large requests (`coalesce`) and kept
//! until acknowledged (`writeback`).

pub mod block_cache;
pub(super) mod coalesce;
pub(super) mod read;
pub(super) mod read_ahead;
pub(super) mod write;
pub mod writeback;
