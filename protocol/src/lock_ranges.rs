//! The byte ranges one lock owner holds on one file, as POSIX record locks keep them: a set
//! of disjoint inclusive ranges, each read or write. Setting a range replaces what the
//! owner held there: ranges of the same type that overlap or touch merge into one, ranges
//! of the other type are cut around it (one may split in two), and an unlock cuts only.
//! Both sides keep their locks with this: the server for every owner of a file, the client
//! for what it must give back at a close and re-take after a server restart.
//!
//! `END` (2^63 - 1, the kernel's OFFSET_MAX) is "to the end of the file, however long".

/// The last byte of a lock that runs to the end of the file.
pub const END: u64 = i64::MAX as u64;

/// F_RDLCK, F_WRLCK and F_UNLCK as Linux numbers them (and the wire carries them).
pub const F_RDLCK: u32 = 0;
pub const F_WRLCK: u32 = 1;
pub const F_UNLCK: u32 = 2;

/// A shared (read) or exclusive (write) lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockType {
    Read,
    Write,
}

impl LockType {
    /// The type a wire `type` names: Some(type) to lock, None to unlock; Err for others.
    pub fn from_wire(t: u32) -> Result<Option<LockType>, u32> {
        match t {
            F_RDLCK => Ok(Some(LockType::Read)),
            F_WRLCK => Ok(Some(LockType::Write)),
            F_UNLCK => Ok(None),
            other => Err(other),
        }
    }

    pub fn to_wire(self) -> u32 {
        match self {
            LockType::Read => F_RDLCK,
            LockType::Write => F_WRLCK,
        }
    }

    /// Two locks of different owners over a common byte exclude each other.
    pub fn conflicts(self, other: LockType) -> bool {
        self == LockType::Write || other == LockType::Write
    }
}

/// One held range: bytes `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Range {
    pub start: u64,
    pub end: u64,
    pub typ: LockType,
}

impl Range {
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && self.end >= start
    }
}

/// One owner's ranges on one file: disjoint, sorted by start (and so by end). Every
/// operation finds the ranges it touches by binary search: its cost is logarithmic in the
/// ranges held plus what it touches (and a move of the tail when it adds or removes one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges {
    held: Vec<Range>,
}

impl Ranges {
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Range> {
        self.held.iter()
    }

    /// The indexes of the ranges that overlap or touch `start..=end`.
    fn near(&self, start: u64, end: u64) -> std::ops::Range<usize> {
        let lo = self
            .held
            .partition_point(|r| r.end.saturating_add(1) < start);
        let hi = self
            .held
            .partition_point(|r| r.start <= end.saturating_add(1));
        lo..hi.max(lo)
    }

    /// What the ranges in `near` become when `start..=end` is set to `typ`.
    fn replaced(
        &self,
        start: u64,
        end: u64,
        typ: Option<LockType>,
    ) -> (std::ops::Range<usize>, Vec<Range>) {
        let near = self.near(start, end);
        let (mut from, mut to) = (start, end);
        let mut out = Vec::with_capacity(near.len() + 2);
        for r in &self.held[near.clone()] {
            let touches =
                r.end.checked_add(1) == Some(start) || end.checked_add(1) == Some(r.start);
            if Some(r.typ) == typ {
                from = from.min(r.start);
                to = to.max(r.end);
                continue;
            }
            if touches && !r.overlaps(start, end) {
                out.push(*r);
                continue;
            }
            if r.start < start {
                out.push(Range {
                    end: start - 1,
                    ..*r
                });
            }
            if r.end > end {
                out.push(Range {
                    start: end + 1,
                    ..*r
                });
            }
        }
        if let Some(typ) = typ {
            out.push(Range {
                start: from,
                end: to,
                typ,
            });
        }
        out.sort_by_key(|r| r.start);
        (near, out)
    }

    /// Sets `start..=end` to `typ` (None: unlocked).
    pub fn set(&mut self, start: u64, end: u64, typ: Option<LockType>) {
        let (near, out) = self.replaced(start, end, typ);
        self.held.splice(near, out);
    }

    /// These ranges after setting `start..=end` to `typ`, these unchanged.
    pub fn with(&self, start: u64, end: u64, typ: Option<LockType>) -> Ranges {
        let mut r = self.clone();
        r.set(start, end, typ);
        r
    }

    /// How many ranges setting `start..=end` to `typ` adds (at most one: a split); 0 when
    /// it adds none or removes some. Nothing is built.
    pub fn growth(&self, start: u64, end: u64, typ: Option<LockType>) -> usize {
        let (near, out) = self.replaced(start, end, typ);
        out.len().saturating_sub(near.len())
    }

    /// The first range held here that a lock of `typ` over `start..=end` by another owner
    /// would conflict with.
    pub fn conflict(&self, start: u64, end: u64, typ: LockType) -> Option<Range> {
        let from = self.held.partition_point(|r| r.end < start);
        self.held[from..]
            .iter()
            .take_while(|r| r.start <= end)
            .find(|r| r.typ.conflicts(typ))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::LockType::{Read, Write};
    use super::*;

    fn sorted(r: &Ranges) -> Vec<(u64, u64, LockType)> {
        let mut v: Vec<_> = r.iter().map(|r| (r.start, r.end, r.typ)).collect();
        v.sort_by_key(|r| r.0);
        v
    }

    #[test]
    fn same_type_ranges_that_overlap_or_touch_merge() {
        let r = Ranges::default()
            .with(0, 9, Some(Write))
            .with(10, 19, Some(Write));
        assert_eq!(sorted(&r), vec![(0, 19, Write)]);
        let r = r.with(5, 30, Some(Write));
        assert_eq!(sorted(&r), vec![(0, 30, Write)]);
        let r = r.with(40, 50, Some(Write));
        assert_eq!(sorted(&r), vec![(0, 30, Write), (40, 50, Write)]);
    }

    #[test]
    fn unlocking_the_middle_splits_a_range() {
        let r = Ranges::default()
            .with(0, 99, Some(Write))
            .with(40, 59, None);
        assert_eq!(sorted(&r), vec![(0, 39, Write), (60, 99, Write)]);
        assert!(r.with(0, END, None).is_empty());
    }

    #[test]
    fn another_type_cuts_and_replaces() {
        let r = Ranges::default()
            .with(0, 99, Some(Read))
            .with(10, 19, Some(Write));
        assert_eq!(
            sorted(&r),
            vec![(0, 9, Read), (10, 19, Write), (20, 99, Read)]
        );
        // Touching ranges of another type stay apart.
        let r = Ranges::default()
            .with(0, 9, Some(Read))
            .with(10, 19, Some(Write));
        assert_eq!(sorted(&r), vec![(0, 9, Read), (10, 19, Write)]);
        // A downgrade over everything merges back into one.
        let r = r.with(0, END, Some(Read));
        assert_eq!(sorted(&r), vec![(0, END, Read)]);
    }

    #[test]
    fn the_edges_of_the_offset_space_do_not_overflow() {
        let r = Ranges::default().with(0, END, Some(Write)).with(0, 0, None);
        assert_eq!(sorted(&r), vec![(1, END, Write)]);
        let r = r.with(END, END, None);
        assert_eq!(sorted(&r), vec![(1, END - 1, Write)]);
        let r = Ranges::default().with(u64::MAX, u64::MAX, Some(Read));
        assert_eq!(r.with(0, u64::MAX, Some(Read)).len(), 1);
    }

    /// Against a model of 64 bytes, one lock state each: the same bytes locked, ranges
    /// sorted, disjoint, and merged wherever they touch with the same type.
    #[test]
    fn random_operations_agree_with_a_byte_model() {
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let mut model = [None::<LockType>; 64];
            let mut r = Ranges::default();
            for _ in 0..50 {
                let a = next(64);
                let b = (a + next(8)).min(63);
                let typ = [Some(Read), Some(Write), None][next(3) as usize];
                let grows = r.growth(a, b, typ);
                let before = r.len();
                r.set(a, b, typ);
                assert_eq!(grows, r.len().saturating_sub(before));
                model[a as usize..=b as usize].fill(typ);
                let mut seen = [None::<LockType>; 64];
                let v: Vec<_> = r.iter().copied().collect();
                for w in v.windows(2) {
                    assert!(w[0].end < w[1].start, "sorted, disjoint: {v:?}");
                    assert!(
                        w[0].end + 1 < w[1].start || w[0].typ != w[1].typ,
                        "merged: {v:?}"
                    );
                }
                for x in &v {
                    seen[x.start as usize..=x.end as usize].fill(Some(x.typ));
                }
                assert_eq!(seen, model);
            }
        }
    }

    #[test]
    fn growth_counts_what_with_adds() {
        let r = Ranges::default()
            .with(0, 9, Some(Read))
            .with(20, 29, Some(Write))
            .with(40, 49, Some(Read));
        for (s, e, t) in [
            (100, 100, Some(Read)),
            (10, 19, Some(Read)),
            (22, 23, Some(Read)),
            (22, 23, None),
            (0, END, None),
            (0, 45, Some(Write)),
            (5, 5, Some(Write)),
            (50, 60, Some(Read)),
        ] {
            let grown = r.with(s, e, t).len().saturating_sub(r.len());
            assert_eq!(r.growth(s, e, t), grown, "{s}..={e} {t:?}");
        }
    }

    #[test]
    fn conflicts_need_overlap_and_a_writer() {
        let r = Ranges::default().with(10, 19, Some(Read));
        assert!(r.conflict(0, 9, Write).is_none());
        assert!(r.conflict(15, 15, Read).is_none());
        assert_eq!(r.conflict(19, 30, Write).map(|r| r.start), Some(10));
    }
}
