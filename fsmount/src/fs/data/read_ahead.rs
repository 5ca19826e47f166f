//! Sequential-access detection per open file, for read-ahead.
//!
//! A read that starts where the previous one ended (or at offset 0) is sequential; each
//! sequential read doubles the window of blocks to fetch ahead, up to the cap, so a
//! high-latency link is kept full. The kernel sends its own read-ahead requests in parallel,
//! so they may arrive slightly out of order: while a window is open, a read within `slack`
//! bytes of the expected offset keeps it. Any other read resets the window to nothing.

/// Read-ahead state of one open file.
#[derive(Debug, Clone)]
pub struct ReadAhead {
    /// Where the next sequential read would start.
    next: u64,
    /// Blocks to keep in flight ahead of the reader.
    window: u64,
    max_window: u64,
    slack: u64,
}

impl ReadAhead {
    /// `max_window`: most blocks fetched ahead (0: no read-ahead); `slack`: how far (bytes)
    /// from the expected offset a read may start and still count as sequential.
    pub fn new(max_window: u64, slack: u64) -> ReadAhead {
        ReadAhead {
            next: 0,
            window: 0,
            max_window,
            slack,
        }
    }

    /// Records a read of `len` bytes at `offset`; returns how many blocks to fetch ahead of
    /// it, and whether it is sequential.
    pub fn observe(&mut self, offset: u64, len: u64) -> (u64, bool) {
        let end = offset + len;
        if offset == self.next {
            self.window = (self.window * 2).clamp(1, self.max_window.max(1));
            self.next = end;
        } else if self.window > 0 && offset.abs_diff(self.next) <= self.slack {
            self.next = self.next.max(end);
        } else {
            self.window = 0;
            self.next = end;
            return (0, false);
        }
        (self.window.min(self.max_window), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_grows_while_sequential_and_resets_on_a_jump() {
        let mut r = ReadAhead::new(8, 0);
        let windows: Vec<u64> = (0..6).map(|i| r.observe(i * 4096, 4096).0).collect();
        assert_eq!(windows, vec![1, 2, 4, 8, 8, 8]);
        assert_eq!(r.observe(1 << 30, 4096), (0, false));
        assert_eq!(r.observe((1 << 30) + 4096, 4096), (1, true));
    }

    #[test]
    fn slightly_reordered_reads_keep_the_window() {
        let mut r = ReadAhead::new(8, 8192);
        assert_eq!(r.observe(0, 4096), (1, true));
        assert_eq!(r.observe(8192, 4096), (1, true), "ahead within slack");
        assert_eq!(r.observe(4096, 4096), (1, true), "behind within slack");
        assert_eq!(r.observe(12288, 4096), (2, true));
        assert_eq!(r.observe(1 << 20, 4096), (0, false));
    }

    #[test]
    fn no_read_ahead_when_capped_at_zero() {
        let mut r = ReadAhead::new(0, 0);
        assert_eq!(r.observe(0, 4096), (0, true));
        assert_eq!(r.observe(4096, 4096), (0, true));
    }
}
