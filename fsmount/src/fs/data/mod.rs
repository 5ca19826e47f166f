//! File data: the block cache (`block_cache`), reads and read-ahead (`read`,
//! `read_ahead`), writes (`write`), gathered into large requests (`coalesce`) and kept
//! until acknowledged (`writeback`); the next small files of a directory being walked,
//! opened ahead of their reader (`open_ahead`).

pub mod block_cache;
pub(super) mod coalesce;
pub mod open_ahead;
pub(super) mod read;
pub(super) mod read_ahead;
pub(super) mod write;
pub mod writeback;
