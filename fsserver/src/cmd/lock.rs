//! Lock: `LockRequest` -> `LockReply`, a lock on an open file held for the session (see
//! `coordination::locks`). `step` makes one try and never blocks: a SET that must wait
//! comes back as the [`Waiter`] the connection parks on before trying again (`apply`, the
//! table's entry, is a try that never waits).

use std::sync::Arc;

use nix::errno::Errno;
use protocol::lock_ranges::{LockType, END, F_UNLCK};

use super::{Ctx, Reply};
use crate::coordination::locks::{self, FileKey, Kind, Outcome, SetLock, Waiter};
use crate::error::FsError;

pub const OP_TEST: u32 = 0;
pub const OP_SET: u32 = 1;
pub const OP_CANCEL: u32 = 2;
pub const OP_RECLAIMED: u32 = 3;

/// What one try came to.
#[derive(Debug)]
pub enum Step {
    Reply(proto::LockReply),
    /// Queued behind a conflicting lock: wait on it, then try again with it.
    Wait(Arc<Waiter>),
    /// The grace period after a restart: wait for its end, then try again.
    Grace,
}

/// The reply of a SET, CANCEL or RECLAIMED, and of a TEST that found nothing in the way.
fn nothing() -> proto::LockReply {
    proto::LockReply {
        r#type: F_UNLCK,
        ..Default::default()
    }
}

/// One try at `req` (validated by `request`); `waiter`: the wait it retries.
pub fn step(
    ctx: &Ctx,
    req: &proto::LockRequest,
    waiter: Option<&Arc<Waiter>>,
) -> Result<Step, FsError> {
    let locks = &ctx.locks.locks;
    let who = &ctx.locks.who;
    if req.op == OP_RECLAIMED {
        locks.reclaimed(who);
        return Ok(Step::Reply(nothing()));
    }
    let file = ctx.handles.get(req.handle)?;
    let key = FileKey::of(&file)?;
    let kind = if req.kind == 1 { Kind::Flock } else { Kind::Posix };
    // Validated at decode: a known type, start <= end.
    let typ = LockType::from_wire(req.r#type).map_err(|_| FsError::Sys(Errno::EINVAL))?;
    let end = locks::clamp_end(req.end);
    match req.op {
        OP_TEST => {
            if locks.grace.active() {
                return Ok(Step::Grace);
            }
            let typ = typ.unwrap_or(LockType::Write);
            let found = locks.test(who, key, &file, kind, req.owner, typ, req.start, end)?;
            Ok(Step::Reply(match found {
                Some((typ, start, end, pid)) => proto::LockReply {
                    r#type: typ.to_wire(),
                    start,
                    end: end.min(END),
                    pid,
                },
                None => nothing(),
            }))
        }
        OP_CANCEL => {
            locks.cancel(who, key, req.owner, kind);
            Ok(Step::Reply(nothing()))
        }
        OP_SET => {
            if typ == Some(LockType::Write) && !writable(&file) && kind == Kind::Posix {
                return Err(FsError::Refused(
                    Errno::EBADF,
                    "a write lock needs a file open for writing".into(),
                ));
            }
            let set = SetLock {
                kind,
                owner: req.owner,
                typ,
                start: if kind == Kind::Flock { 0 } else { req.start },
                end: if kind == Kind::Flock { END } else { end },
                pid: req.pid,
                handle: req.handle,
                wait: req.wait,
                reclaim: req.reclaim,
            };
            Ok(match locks.set(who, key, &file, &set, waiter)? {
                Outcome::Done if ctx.handles.get(req.handle).is_err() => {
                    // Closed while this ran: the close let go of what it saw, this goes too.
                    locks.closed(&who.session, req.handle);
                    return Err(FsError::BadHandle(req.handle));
                }
                Outcome::Done => Step::Reply(nothing()),
                Outcome::Blocked(w) => Step::Wait(w),
                Outcome::Grace => Step::Grace,
            })
        }
        _ => Err(FsError::Sys(Errno::EINVAL)),
    }
}

/// The handle was opened for writing (POSIX asks that of a write lock's descriptor).
fn writable(file: &std::fs::File) -> bool {
    use std::os::fd::AsFd;
    nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map(|m| {
            let acc = m & libc::O_ACCMODE;
            acc == libc::O_WRONLY || acc == libc::O_RDWR
        })
        .unwrap_or(false)
}

/// A try that never waits: a conflict is EAGAIN, the grace period too.
pub fn apply(ctx: &Ctx, mut req: proto::LockRequest) -> Result<Reply<proto::LockReply>, FsError> {
    req.wait = false;
    match step(ctx, &req, None)? {
        Step::Reply(r) => Ok(Reply::msg(r)),
        Step::Wait(_) | Step::Grace => Err(FsError::Refused(
            Errno::EAGAIN,
            "locks are being reclaimed after a restart".into(),
        )),
    }
}
