//! The mount's names and what it knows of them: inodes and the paths that reach them
//! (`inodes`), attributes the server reported (`attr_cache`), directories whose names are
//! known (`known_dirs`), the directory leases held (`leases`), the operations answered
//! locally under them (`local_ops`), their predicted attributes and outcomes
//! (`predictions`) and the space the server set aside for them (`budget`).

pub mod attr_cache;
pub mod budget;
pub mod inodes;
pub(super) mod known_dirs;
pub(super) mod leases;
pub(super) mod local_ops;
pub mod predictions;
