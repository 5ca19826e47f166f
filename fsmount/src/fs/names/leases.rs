//! Directory leases, as this mount holds them. The server grants a directory's lease with
//! a whole listing or a mkdir this mount asked it for; while it is held nobody else reads
//! or changes anything in or below that directory without recalling it first, so this
//! mount answers lookups there from what it knows for as long as the lease lasts (see
//! `known_dirs`) and creates, changes, renames and removes names there itself (see
//! `local_ops`), sending the requests behind.
//!
//! Leases last three quarters of the server's lease time from the request that granted or
//! renewed them (the server counts from when it received it); a background task renews
//! them every third of it; a renewal's reply names the leases recalled meanwhile (not
//! renewed), as a Notify does. A recall gives the lease back at once: the coalesced
//! writes are sent, then an ORDERED Lease request, which the server runs only after every
//! request sent before it, so the other client sees all of this mount's changes. A new
//! server session (the server restarted) drops every lease: the server has forgotten them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::rpc;

use crate::fs::budget::Mark;
use crate::fs::known_dirs::DirAttr;
use crate::fs::{Fs, Ino, Names};

/// Renewal period when the server has not said its lease time yet.
const DEFAULT_RENEW: Duration = Duration::from_secs(10);

/// Until when a lease granted or renewed by a request sent at `sent` is trusted.
pub(in crate::fs) fn trusted_until(sent: Instant, lease_ms: u32) -> Instant {
    sent + Duration::from_millis(lease_ms as u64) * 3 / 4
}

impl Fs {
    /// True if this mount asks for leases.
    pub(in crate::fs) fn wants_leases(&self) -> bool {
        self.options.leases
    }

    /// Taken just before a request asking for a lease is sent: the recalls so far, and the
    /// budget's mark (see `budget`).
    pub(in crate::fs) fn lease_asked(&self) -> (u64, Mark) {
        (
            self.recalls.load(std::sync::atomic::Ordering::SeqCst),
            self.budget.mark(),
        )
    }

    /// The server granted `dir`'s lease (`lease_ms`) in reply to a request sent at `sent.0`,
    /// when `lease_asked` said `sent.1`; `dir_attr` is the directory's own attributes.
    ///
    /// A recall that came in since the request was sent may be of this very grant: the
    /// server recalls right after granting, and the connection's reader runs the recall
    /// (`recall`) before the task awaiting the reply takes the grant. Such a grant is not
    /// taken (the lease was given back, or will be at the next recall): answering under
    /// it would answer under a lease the server has already handed to someone else.
    pub(in crate::fs) fn lease_granted(
        &self,
        dir: Ino,
        sent: (Instant, (u64, Mark)),
        (lease_ms, budget, owner): (u32, Option<&proto::Budget>, Option<&proto::Owner>),
        dir_attr: &proto::Attr,
    ) {
        tracing::debug!("{dir}: lease of {lease_ms} ms granted");
        // Not asked for (leases off): not taken, whatever a broken server says.
        if lease_ms == 0 || !self.wants_leases() {
            return;
        }
        self.budget.refresh(budget, sent.1 .1);
        let mut n = self.names();
        if let Some(o) = owner {
            // Who owns what the caller makes, as the server said: local answers need not
            // wait for the caller's first create to learn it.
            n.learned_owner((o.uid, o.gid));
        }
        if self.recalls.load(std::sync::atomic::Ordering::SeqCst) != sent.1 .0 {
            tracing::debug!("{dir}: a recall came meanwhile; the grant is not taken");
            return;
        }
        let sent = sent.0;
        self.lease_ms
            .store(lease_ms as u64, std::sync::atomic::Ordering::Relaxed);
        let until = trusted_until(sent, lease_ms);
        for lapsed in n.known.lease(dir, sent, until, DirAttr::of(dir_attr)) {
            n.predictions.forget_kept_in(Some(lapsed));
        }
    }

    /// The server recalls the leases on `paths` (called on the connection's reader: sends,
    /// never waits). Stops answering there, sends what is buffered, and gives them back.
    ///
    /// A path this mount knows by no inode may be a directory it knows by another name:
    /// one it renamed, the server not having run or answered that rename yet. It would
    /// still trust that lease under the new name, while the server takes the give-back of
    /// the old; so then every lease goes back.
    pub fn recall(&self, mut paths: Vec<Bytes>) {
        let mut n = self.names();
        self.recalls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut unknown = false;
        for p in &paths {
            match n.inodes.at_path(p) {
                Some(dir) => {
                    n.known.unlease(dir);
                    n.predictions.forget_kept_in(Some(dir));
                }
                None => unknown = true,
            }
        }
        if unknown {
            tracing::debug!(
                "a recall names a directory not known by that name: all leases go back"
            );
            for dir in n.known.unlease_all() {
                if let Some(p) = n.inodes.path(dir) {
                    paths.push(Bytes::from(p));
                }
            }
            n.predictions.forget_kept_in(None);
        }
        tokio::spawn(self.give_back(paths));
    }

    /// A rename the server runs moves `tops` (its two sides, as far as known): this mount
    /// stops answering under the leases at or below them and gives them back first. The
    /// server moves a lease with its directory only where it could grant it (else it
    /// recalls it), and a request of another session already under way at the new path
    /// would not wait for it: no local answer may race that.
    pub(in crate::fs) fn give_back_moved(&self, tops: &[Ino]) {
        let mut n = self.names();
        // A file has no lease below it (most renames): nothing to walk.
        let not_dir = |a: proto::Attr| a.mode & libc::S_IFMT != libc::S_IFDIR;
        let tops: Vec<Ino> = tops
            .iter()
            .copied()
            .filter(|t| !n.attrs.get(*t).is_some_and(not_dir))
            .collect();
        if tops.is_empty() || !n.known.any_leased() {
            return;
        }
        // At or below a top: one of its ancestors (by first name; directories have one).
        let moved = |n: &Names, mut dir: Ino| {
            for _ in 0..=crate::fs::inodes::MAX_DEPTH {
                if tops.contains(&dir) {
                    return true;
                }
                match n.inodes.first_name(dir) {
                    Some((parent, _)) if parent != dir => dir = parent,
                    _ => return false,
                }
            }
            false
        };
        let mut paths = Vec::new();
        for dir in n.known.leased() {
            if !moved(&n, dir) {
                continue;
            }
            n.known.unlease(dir);
            n.predictions.forget_kept_in(Some(dir));
            if let Some(path) = n.inodes.path(dir) {
                paths.push(Bytes::from(path));
            }
        }
        if !paths.is_empty() {
            tokio::spawn(self.give_back(paths));
        }
    }

    /// Gives back every lease (the server lost track of changes: a recall may be lost).
    pub(in crate::fs) fn give_back_all(&self) {
        let mut n = self.names();
        self.recalls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(call) = self.give_back_held(&mut n) {
            tokio::spawn(call);
        }
    }

    /// Gives back every lease the session holds and waits for the server to take them (at
    /// unmount: the server need not recall them from a client that is gone; the kernel has
    /// forgotten the inodes by then, so they go back by session, not by path).
    pub async fn give_back_before_leaving(&self) {
        let call = {
            let mut n = self.names();
            n.known.unlease_all();
            n.predictions.forget_kept_in(None);
            if let Some(c) = &self.coalescer {
                c.flush_all();
            }
            let req = proto::LeaseRequest {
                returned: Vec::new(),
                all: true,
                want_budget: false,
            };
            self.remote.call_ordered(
                <rpc::Lease as rpc::Rpc>::COMMAND,
                prost::Message::encode_to_vec(&req).into(),
                Bytes::new(),
                crate::remote::Patience::MountTimeout,
            )
        };
        if let Err(e) = call.await {
            tracing::warn!("giving back the directory leases failed: {e}");
        }
    }

    /// Stops holding every lease and sends them back (under the names lock `n`); the
    /// call, if any.
    fn give_back_held(
        &self,
        n: &mut Names,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let dirs = n.known.unlease_all();
        n.predictions.forget_kept_in(None);
        let paths: Vec<Bytes> = dirs
            .iter()
            .filter_map(|d| n.inodes.path(*d))
            .map(Bytes::from)
            .collect();
        (!paths.is_empty()).then(|| self.give_back(paths))
    }

    /// Sends the coalesced writes, then the ORDERED Lease request returning `paths`; the
    /// caller holds the names lock (no local answer is sent in between) and runs or spawns
    /// the returned future, which logs a failure.
    fn give_back(
        &self,
        paths: Vec<Bytes>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        if let Some(c) = &self.coalescer {
            c.flush_all();
        }
        let req = proto::LeaseRequest {
            returned: paths,
            all: false,
            want_budget: false,
        };
        let call = self.remote.call_ordered(
            <rpc::Lease as rpc::Rpc>::COMMAND,
            prost::Message::encode_to_vec(&req).into(),
            Bytes::new(),
            crate::remote::Patience::MountTimeout,
        );
        let returned = req.returned.len();
        async move {
            if let Err(e) = call.await {
                tracing::warn!("giving back {returned} directory lease(s) failed: {e}");
            }
        }
    }

    /// The server lost this mount's session (it restarted): it holds no lease of ours.
    pub(in crate::fs) fn leases_lost(&self) {
        let mut n = self.names();
        self.recalls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.sessions_lost
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        n.known.unlease_all();
        n.predictions.forget_kept_in(None);
    }

    /// The budget did not cover a local answer: renew now, for a fresh one.
    pub(in crate::fs) fn budget_short(&self) {
        self.renew_now.notify_one();
    }

    /// Renews this mount's leases every third of the lease time while it holds any (and
    /// early when the budget runs out), until the core is dropped.
    pub fn install_lease_renewal(self: &Arc<Self>) {
        if !self.wants_leases() {
            return;
        }
        let fs = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let period = match fs.upgrade() {
                    Some(fs) => match fs.lease_ms.load(std::sync::atomic::Ordering::Relaxed) {
                        0 => DEFAULT_RENEW,
                        ms => Duration::from_millis(ms) / 3,
                    },
                    None => return,
                };
                let woken = match fs.upgrade() {
                    Some(fs) => {
                        let early = async move { fs.renew_now.notified().await };
                        tokio::select! {
                            _ = tokio::time::sleep(period) => false,
                            _ = early => true,
                        }
                    }
                    None => return,
                };
                let Some(fs) = fs.upgrade() else { return };
                if woken {
                    // At most one early renewal per this long: a mount out of budget asks
                    // the server, not floods it.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if !fs.names().known.any_leased() {
                    continue;
                }
                let (sent, mark) = (Instant::now(), fs.budget.mark());
                // A fresh budget only if this mount answered anything since the last:
                // an idle one lets the space set aside for it go.
                let req = proto::LeaseRequest {
                    want_budget: fs.budget.used(),
                    ..Default::default()
                };
                let renewed = fs.remote.rpc::<rpc::Lease>(&req).await;
                match renewed {
                    Ok(r) if r.lease_ms > 0 => {
                        // Recalled and not renewed: given back before the others are
                        // renewed (a Notify of the recall may have been lost or be late).
                        if !r.recalled.is_empty() {
                            fs.recall(r.recalled);
                        }
                        let mut n = fs.names();
                        for lapsed in n.known.renewed(sent, trusted_until(sent, r.lease_ms)) {
                            n.predictions.forget_kept_in(Some(lapsed));
                        }
                        drop(n);
                        fs.budget.refresh(r.budget.as_ref(), mark);
                    }
                    Ok(_) => fs.leases_lost(),
                    Err(e) => tracing::debug!("lease renewal failed: {e}"),
                }
            }
        });
    }
}
