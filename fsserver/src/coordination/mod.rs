pub mod changes;
pub mod create_verifiers;
#[allow(unsafe_code)]
pub mod disk_locks;
#[allow(unsafe_code)]
pub mod disk_watch;
pub mod lease_fairness;
pub mod lease_grace;
#[allow(unsafe_code)]
pub mod lease_policy;
pub mod lease_table;
pub mod leases;
pub mod lock_grace;
pub mod locks;
pub mod ordering;
pub mod recalls;
pub mod session;
pub mod sync;
