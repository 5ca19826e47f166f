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

use std::collections::{HashMap, HashSet};

use crate::fs::Ino;
use attr_cache::AttrCache;
use inodes::InodeTable;
use known_dirs::KnownDirs;
use predictions::Predictions;

/// Everything the mount knows of its names, behind one lock (`Fs::names`): a lookup on
/// the FUSE thread, a local answer changing several tables, a lease granted, recalled or
/// lost and a reply adopting a prediction each see and leave the whole state consistent.
/// The local-answer mode is here too: the leases held (`known`), the predictions of what
/// is in flight under them, and the owners the server gives new objects.
///
/// Lock order: this lock may be held while taking the budget's, the open-file table's,
/// the block cache's, the coalescer's and the remote's (sending ORDERED requests); none of
/// those is held while taking this one.
pub struct Names {
    pub(in crate::fs) inodes: InodeTable,
    /// Attributes the server last reported, for GETATTR within the attribute timeout.
    pub(in crate::fs) attrs: AttrCache,
    /// Directories whose names this mount knows for a while (created or listed by it),
    /// and the leases held on them.
    pub(in crate::fs) known: KnownDirs,
    /// Operations answered locally whose requests are in flight, and what they predict.
    pub(in crate::fs) predictions: Predictions,
    /// Per caller (uid, gid): the owner the server gives what it makes (squashing applied).
    pub(in crate::fs) owners: HashMap<(u32, u32), (u32, u32)>,
    /// Open files whose writes did not fit in the budget: their close waits for the server.
    pub(in crate::fs) over_budget: HashSet<Ino>,
}

impl Names {
    pub(in crate::fs) fn new(inodes: InodeTable, attrs: AttrCache, known: KnownDirs) -> Names {
        Names {
            inodes,
            attrs,
            known,
            predictions: Predictions::default(),
            owners: HashMap::new(),
            over_budget: HashSet::new(),
        }
    }

    /// The whole listing of `dir` to serve a readdir from (see `KnownDirs::whole`), if this
    /// mount changed neither `dir` nor anything listed in it since it was fetched: a change
    /// elsewhere (the files `rm -rf` removes in the directory before) leaves it good.
    pub(in crate::fs) fn whole_listing(&self, dir: Ino) -> Option<known_dirs::Whole> {
        let (whole, generation) = self.known.whole(dir)?;
        let dir_key = self.inodes.key_of(dir)?;
        let listed = whole.0.iter().filter_map(|e| {
            let a = e.attr.as_ref()?;
            Some((self.inodes.known(a), inodes::key(a)))
        });
        let unchanged = self.attrs.unchanged_since(
            generation,
            std::iter::once((Some(dir), dir_key)).chain(listed),
        );
        unchanged.then_some(whole)
    }
}
