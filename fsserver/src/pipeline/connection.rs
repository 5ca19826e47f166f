//! One client connection: handshake, then a reader loop that spawns one task per request
//! (at most `max_in_flight` at once: the connection's share of the workers; in order on a
//! handle where that matters, see `ordering`) and a writer
//! task that sends replies as they complete. Read replies reserve their bytes from the
//! connection's unsent budget before they run, and the writer drops a client that reads
//! nothing for `write_timeout`: a client that stops reading pins little, and not for long.
//! A malformed frame ends this connection only: the peer gets a `Goodbye` error frame on
//! stream 0, in-flight requests finish, the socket closes. Handles and cached replies belong
//! to the client's session (see `session`), which outlives the connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use protocol::writer::{FileData, Queued, Sink};
use protocol::{Command, Flags, Frame, FrameCodec, Limits, ProtocolError, StreamId};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedRead;
use tracing::{debug, error, info, warn};

use crate::access::admission::PreAuthSlot;
use crate::access::{handshake, transport};
use crate::cmd::{self, Ctx};
use crate::coordination::changes;
use crate::coordination::leases;
use crate::coordination::ordering::HandleOrder;
use crate::coordination::session::Claim;
use crate::error::FsError;
use crate::pipeline::lane::{Lane, Panicked};
use crate::request::Request;
use crate::stats::ConnStats;
use crate::Shared;

pub async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: broadcast::Receiver<()>,
    pending: PreAuthSlot,
) {
    let Some((mut reader, wr, auth, opened_plain)) = authenticate(socket, peer, &shared).await
    else {
        return;
    };
    // Authenticated: the pre-auth slot goes back; the connection slot was taken in the
    // handshake and is held until the connection ends.
    drop(pending);
    let _slot = auth.slot;
    let session = auth.session.clone();
    // The client held (or may have held) leases of the last run as `auth.replaced`: the
    // grace expects it as this session now, back at its first request.
    let mut replaced = match auth.replaced.is_empty() {
        true => Vec::new(),
        false => {
            shared
                .leases
                .grace
                .presented_as(&auth.replaced, &auth.session_id);
            auth.session_id.clone()
        }
    };
    if auth.resumed {
        info!(%peer, export = %auth.export.name, session = %session_tag(&auth.session_id),
            open_handles = session.handles.len(), "client resumed its session");
    } else {
        info!(%peer, export = %auth.export.name, session = %session_tag(&auth.session_id), "client authenticated");
    }
    let limits = Limits {
        max_msg_len: Limits::MAX_MSG_LEN,
        max_data_len: shared.config.max_data,
    };
    reader.decoder_mut().set_limits(limits);

    let max_in_flight = shared.config.max_in_flight as usize;
    let (tx, rx) = mpsc::channel::<Outgoing>(max_in_flight + 1);
    let mut writer = tokio::spawn(protocol::writer::run(wr, rx, shared.config.write_timeout));
    let unsent = Arc::new(Semaphore::new(unsent_budget(shared.config.max_data)));
    let stats = Arc::new(ConnStats {
        peer,
        export: auth.export.name.clone(),
        token: auth.token.clone(),
        since: std::time::SystemTime::now(),
        resumed: auth.resumed,
        requests: Default::default(),
        bytes_in: Default::default(),
        bytes_out: Default::default(),
        handles: session.handles.clone(),
    });
    let registration =
        shared
            .live
            .register(&auth.base.name, &auth.base.dir, &auth.secret, stats.clone());
    let mut ended = registration.ended.clone();
    let ctx = Ctx {
        export: auth.export,
        handles: session.handles.clone(),
        max_data: shared.config.max_data,
        read_only: auth.read_only,
        sendfile: opened_plain && shared.config.sendfile,
        // Leases need notifications: a recall comes as one.
        leases: (auth.notify && shared.leases.enabled()).then(|| leases::LeaseHolder {
            leases: shared.leases.clone(),
            session: Bytes::from(auth.session_id.clone()),
            token: auth.token.as_str().into(),
        }),
        locks: cmd::LockHolder {
            locks: shared.locks.clone(),
            who: crate::coordination::locks::Who {
                session: Bytes::from(auth.session_id.clone()),
                token: auth.token.as_str().into(),
            },
        },
        create_verifiers: shared.create_verifiers.clone(),
    };
    let me: leases::Holder = Bytes::from(auth.session_id.clone());
    // Other clients' changes, forwarded as Notify frames to a client that asked for them.
    let conn_id = shared.changes.connection_id();
    let forwarder = auth.notify.then(|| {
        let rx = shared.changes.subscribe(&ctx.export.dir);
        // Its recalls, queued for the session (they outlast this connection).
        let recalls = ctx
            .leases
            .as_ref()
            .map(|h| h.leases.recall_queues.open(&h.session));
        tokio::spawn(forward_changes(rx, conn_id, recalls, tx.clone()))
    });
    // All connections of one token together run at most their token's share.
    let slots = crate::pipeline::slots::Slots::new(max_in_flight, shared.token_share(&auth.token));
    // This connection's file system calls, in a thread of their own (see `lane`).
    let lane = Arc::new(Lane::new(format!("fsserver-conn-{conn_id}")));
    let mut writer_result = None;
    let mut order = HandleOrder::default();
    // Set when the connection ends: lock waits parked on it end (their reply would go
    // nowhere; the client asks again on its next connection), so nothing keeps it open.
    let (closing_tx, closing) = tokio::sync::watch::channel(false);

    loop {
        let next = tokio::select! {
            next = reader.next() => next,
            _ = shutdown.recv() => break,
            // A reload took this connection's export or token away.
            _ = ended.changed() => {
                let why = ended.borrow().clone().unwrap_or_default();
                warn!(%peer, "ending the connection: {why}");
                let frame = Frame::error(Command::Goodbye.code(), StreamId::CONTROL, libc::EACCES, why);
                let _ = tx.send(Outgoing::message(frame)).await;
                break;
            }
            // The writer gave up (the client reads nothing): stop taking requests.
            r = &mut writer => {
                writer_result = Some(r);
                break;
            }
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            // Gone without an orderly close (killed, cut, a TLS peer without close_notify):
            // nothing is wrong with the connection's data, and nobody reads a goodbye.
            Some(Err(ProtocolError::Io(e))) if peer_gone(&e) => {
                info!(%peer, "client gone: {e}");
                break;
            }
            Some(Err(e)) => {
                goodbye(&tx, peer, e).await;
                break;
            }
        };
        stats.request_in(&shared.stats, frame_len(&frame));
        // Sent only once the client read that its old session is gone (and dropped the
        // leases the last run granted it: see `lease_grace`).
        if !replaced.is_empty() {
            shared
                .leases
                .grace
                .came_back(&std::mem::take(&mut replaced));
        }
        if frame.is_response() || frame.stream_id == StreamId::CONTROL {
            let what = format!(
                "unexpected frame: cmd {} stream {} flags {:?}",
                frame.cmd, frame.stream_id.0, frame.flags
            );
            goodbye(&tx, peer, ProtocolError::Unexpected(what)).await;
            break;
        }
        // Decoded and validated once, before any bookkeeping: what fails is answered at
        // once and costs nothing more (see `request`).
        let request = match Request::decode(&frame) {
            Ok(r) => r,
            Err(e) => {
                debug!(
                    cmd = frame.cmd,
                    stream = frame.stream_id.0,
                    "request refused: {e}"
                );
                shared
                    .stats
                    .commands
                    .observe(frame.cmd, std::time::Duration::ZERO, false);
                let frame = Frame::error(frame.cmd, frame.stream_id, e.errno(), e.to_string());
                stats.reply_out(&shared.stats, frame_len(&frame));
                if tx.send(Outgoing::message(frame)).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let held = slots.take().await;
        let on_handle = request.on_handle();
        let paths = request.paths();
        let turn = order.turn_of(&crate::coordination::ordering::Request {
            cmd: Some(request.command),
            on_handle,
            paths: &paths,
            ordered: request.ordered,
            exchange: request.renamed().is_some_and(|r| r.exchange),
        });
        // A change through a handle (setattr, write): told by identity.
        let told_by_handle = changes::handle_change(on_handle);
        // Small enough to run on this task (see below).
        let inline = request.read_len(ctx.max_data) <= INLINE_READ_MAX;
        let cmd_code = frame.cmd;
        let task = RequestTask {
            ctx: ctx.clone(),
            tx: tx.clone(),
            session: session.clone(),
            unsent: unsent.clone(),
            stats: stats.clone(),
            shared: shared.clone(),
            subscribed: forwarder.is_some(),
            me: me.clone(),
            conn_id,
            frame,
            request,
            paths,
            told_by_handle,
            closing: closing.clone(),
            lane: lane.clone(),
        };
        if inline {
            // Polled here first: what needs no waiting (a cached read, open or close) is
            // answered without another task or thread; what must wait (a worker, its turn,
            // a recall) goes to the runtime when it is ready (`first_poll`). The replies of
            // requests that came together are then written together.
            let first = std::panic::AssertUnwindSafe(|| {
                protocol::first_poll::run(&tokio::runtime::Handle::current(), task.run(held, turn))
            });
            // A request that panics loses itself only, as on a task of its own: the
            // connection, its session and everyone else's requests go on.
            if std::panic::catch_unwind(first).is_err() {
                error!(%peer, cmd = cmd_code, "a request panicked; it is not answered");
            }
            // One unit of this task's budget each: a client whose requests all run here
            // still lets other connections' tasks run on this thread in turn.
            tokio::task::consume_budget().await;
        } else {
            // A large read's copy and encryption would hold up the requests behind it: on
            // a task of its own, another thread may take it.
            tokio::spawn(task.run(held, turn));
        }
    }
    if let Some(f) = forwarder {
        f.abort();
    }
    let _ = closing_tx.send(true);
    drop(tx);
    let written = match writer_result {
        Some(r) => r,
        None => writer.await,
    };
    match written {
        Ok(Err(e)) if peer_gone(&e) => debug!(%peer, "stopped writing to the client: {e}"),
        Ok(Err(e)) => warn!(%peer, "stopped writing to the client: {e}"),
        Err(e) => warn!(%peer, "writer task failed: {e}"),
        Ok(Ok(())) => {}
    }
    shared.sessions.detach(&session);
    info!(%peer, open_handles = ctx.handles.len(), replayed = session.replies.replayed(), "connection closed");
}

/// `reply` as the session's reply cache keeps it: an Open reply without the file's bytes
/// (a resent Open is answered without them; the cache stays small).
fn without_prefetch(reply: &Frame) -> std::borrow::Cow<'_, Frame> {
    if reply.cmd != Command::Open.code() || reply.is_error() {
        return std::borrow::Cow::Borrowed(reply);
    }
    match reply.decode_msg::<proto::OpenReply>("OpenReply") {
        Ok(mut open) if open.prefetched.is_some() => {
            open.prefetched = None;
            let stripped = Frame::response(reply.cmd, reply.stream_id, &open, bytes::Bytes::new());
            std::borrow::Cow::Owned(stripped)
        }
        _ => std::borrow::Cow::Borrowed(reply),
    }
}

/// Forwards other connections' changes and the session's recalls to this client as Notify
/// frames until the connection ends (the caller aborts it). A client too far behind on
/// changes is told everything changed; recalls come from the session's own queue, never
/// lost to that (see `recalls`), and go first.
async fn forward_changes(
    mut rx: broadcast::Receiver<changes::Published>,
    me: u64,
    recalls: Option<Arc<crate::coordination::recalls::Queue>>,
    tx: mpsc::Sender<Outgoing>,
) {
    use crate::coordination::recalls::Batch;
    let next_recall = || async {
        match &recalls {
            Some(q) => q.next().await,
            None => std::future::pending().await,
        }
    };
    loop {
        let (frame, recalled) = tokio::select! {
            biased;
            batch = next_recall() => {
                let frame = match &batch {
                    Batch::Paths(paths) => changes::recall_frame(paths.clone()),
                    Batch::Everything => changes::everything(),
                };
                (frame, Some(batch))
            }
            published = rx.recv() => match published {
                Ok(p) if p.origin == me => continue,
                Ok(p) => (changes::frame(&p.changes), None),
                Err(broadcast::error::RecvError::Lagged(_)) => (changes::everything(), None),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if tx.send(Outgoing::message(frame)).await.is_err() {
            // This connection ended: another of the session's sends the recalls.
            if let (Some(q), Some(batch)) = (&recalls, recalled) {
                q.put_back(batch);
            }
            return;
        }
    }
}

/// A session id as logged: its first 4 bytes, enough to follow a client through the log,
/// too few to resume its session (which takes all 16).
fn session_tag(id: &[u8]) -> String {
    format!("{}..", hex::encode(&id[..id.len().min(4)]))
}

/// A frame's size on the wire.
fn frame_len(frame: &Frame) -> usize {
    protocol::HEADER_LEN + frame.msg.len() + frame.data.len()
}

/// Admits a request naming `paths` (see `leases::Leases::admit`), recalls the leases of
/// other sessions it reaches into and waits until each is given back or revoked, parked
/// meanwhile (its running slots free for the connection's other requests, see `slots`).
/// The admission is held until the request ends.
async fn recall_leases(
    shared: &Shared,
    export: &std::path::Path,
    me: &leases::Holder,
    reach: (&[Bytes], &[Bytes]),
    held: &mut crate::pipeline::slots::Held,
    passable: Option<&crate::coordination::ordering::Turn>,
) -> Option<leases::Admission> {
    // After a restart that followed a run with leases held: nothing by path runs until
    // that run's holders are back or their leases would have expired.
    if shared.leases.grace.active() && !reach.0.is_empty() {
        held.parked(shared.leases.grace.over()).await;
    }
    let (admission, mut recalls) = shared.leases.admit(export, me, reach);
    if !recalls.is_empty() {
        passable.inspect(|t| t.let_pass());
    }
    while !recalls.is_empty() {
        held.parked(recall_each(shared, recalls)).await;
        recalls = shared.leases.conflicts(export, me, reach);
    }
    admission
}

/// Tells the holders of `recalls` and waits for their leases to end, all at once: a
/// request under several sessions' leases waits one recall timeout at most, not one each.
async fn recall_each(shared: &Shared, recalls: Vec<leases::Recall>) {
    let waits = recalls.into_iter().map(|r| async move {
        let (holder, path) = (r.holder.clone(), r.path.clone());
        if r.first {
            shared.leases.recalls.fetch_add(1, Ordering::Relaxed);
            shared.leases.recall_queues.tell(&holder, path.clone());
        }
        if !shared.leases.wait(r).await {
            warn!(dir = %String::from_utf8_lossy(&path), session = %session_tag(&holder),
                "a recalled lease was not given back in time: revoked");
        }
    });
    futures::future::join_all(waits).await;
}

/// Runs one request on a worker; counts it and its latency (queueing for a worker included).
/// A lease it asks for is granted before it runs (a change another client makes from then
/// on recalls it) and reported in its reply. The reply, and the file range that is its data
/// section when it goes by sendfile.
async fn run_request(
    ctx: Ctx,
    request: Request,
    stream: StreamId,
    shared: &Shared,
    lane: &Lane,
) -> (Frame, Option<FileData>) {
    let cmd = request.command.code();
    let started = std::time::Instant::now();
    let leases = ctx.leases.clone();
    // Leases are keyed below the configured export (see `Export::lease_path`).
    let export = ctx.export.lease_root.clone();
    let within = ctx.export.within.clone();
    // Space set aside for other sessions' local answers: a request that would take it
    // fails as on a full disk.
    // Decoded only while some session has space set aside (nothing to check otherwise).
    let need = shared
        .leases
        .reserving()
        .then(|| request.space_needed())
        .flatten();
    let me = leases
        .as_ref()
        .map(|h| h.session.clone())
        .unwrap_or_default();
    if shared.leases.reserving() {
        if let (Some((need, budgeted)), Some(free)) = (need, leases::Free::of(ctx.export.root())) {
            if shared.leases.takes_reserved(&me, free, need, budgeted) {
                let why = "no space left beyond what is set aside for local answers";
                return (Frame::error(cmd, stream, libc::ENOSPC, why), None);
            }
        }
    }
    let granted = leases.as_ref().and_then(|h| {
        let dir = request.wanted_lease()?;
        let full = ctx.export.lease_path(&dir);
        let grant = h
            .leases
            .grant_numbered_in(&export, &full, &h.session, (&h.token, &within))?;
        // Checked after the grant: a rename of the export's directory that ran before is
        // seen here, one that runs after recalls what is below it, this grant included.
        if !ctx.export.at_its_place() {
            h.leases.take_back(&export, &h.session, &full, grant);
            return None;
        }
        Some((dir, grant))
    });
    let renamed = leases
        .as_ref()
        .filter(|h| h.leases.held() > 0)
        .and_then(|_| request.renamed());
    let exported = ctx.export.clone();
    let wanted_dir = granted.as_ref().map(|(dir, _)| dir.clone());
    // Told with a lease: who owns what this caller makes.
    let owner = granted.as_ref().map(|_| {
        let who = ctx.export.identity.map(request.credentials.clone());
        crate::access::credentials::owner_of_new(&who)
    });
    // What cannot block (see `cmd::at_once`) is answered here; anything else runs on a worker.
    let at_once = cmd::at_once(&ctx, &request);
    let result = match at_once {
        Some(r) => {
            shared.stats.commands.observe_at_once(cmd);
            Ok((r, None))
        }
        // What a client sends in order behind its local answers comes in bursts: on the
        // lane. Anything else (an Open ahead of a walker reading a cold file) keeps the
        // pool's parallelism for the disk.
        None => {
            let lane = request.ordered.then_some(lane);
            run_on_worker(lane, ctx, request, wanted_dir).await
        }
    };
    let (result, mode_decides) = match result {
        Ok((reply, policy)) => (Ok(reply), policy.unwrap_or(true)),
        Err(e) => (Err(e), true),
    };
    // Permissions decided by more than the mode bits there: no lease after all (recalled:
    // the session may hold it from an earlier grant, and trust it).
    let granted = match (granted, mode_decides, &leases) {
        (Some((dir, grant)), false, Some(h)) => {
            h.leases
                .take_back(&export, &h.session, &exported.lease_path(&dir), grant);
            None
        }
        (g, _, _) => g,
    };
    let ok = matches!(result, Ok(Ok(_)));
    if let (true, Some((need, true))) = (ok, need) {
        shared.leases.consumed(&me, need);
    }
    if let Some(h) = &leases {
        if let (Some((dir, grant)), false) = (&granted, ok) {
            h.leases
                .take_back(&export, &h.session, &exported.lease_path(dir), *grant);
        }
        if let (Some(r), true) = (renamed, ok) {
            let (from, to) = (exported.lease_path(&r.from), exported.lease_path(&r.to));
            h.leases
                .renamed(&export, &h.session, &from, &to, r.exchange);
        }
    }

    let result = match (result, granted, &leases) {
        (Ok(Ok(mut reply)), Some((_, grant)), Some(h)) => {
            let budget = h
                .leases
                .budget(&h.session, leases::Free::of(exported.root()));
            if let Ok(c) = Command::try_from(cmd) {
                let owner = owner.unwrap_or_default();
                reply.msg = leases::with_lease(c, &reply.msg, grant.ms, budget, owner);
            }
            Ok(Ok(reply))
        }
        (r, _, _) => r,
    };
    shared.stats.commands.observe(cmd, started.elapsed(), ok);
    match result {
        Ok(Ok(reply)) => {
            let mut frame = Frame::response_bytes(cmd, stream, reply.msg, reply.data);
            if reply.file.is_some() {
                frame.flags = frame.flags.with(Flags::DATA_CRC);
            }
            (frame, reply.file)
        }
        Ok(Err(e)) => {
            debug!(cmd, stream = stream.0, "request failed: {e}");
            (Frame::error(cmd, stream, e.errno(), e.to_string()), None)
        }
        Err(e) => (
            Frame::error(cmd, stream, libc::EIO, format!("request task failed: {e}")),
            None,
        ),
    }
}

/// What a request run on a worker gives: its reply, and the lease policy's verdict when it
/// asked for a lease.
type WorkerResult = Result<(Result<cmd::Encoded, FsError>, Option<bool>), Panicked>;

/// Runs `request` as its caller on the connection's lane if given, else on a blocking
/// worker; with the lease policy's verdict when the request asked for a lease on
/// `wanted_dir`.
async fn run_on_worker(
    lane: Option<&Lane>,
    ctx: Ctx,
    request: Request,
    wanted_dir: Option<Bytes>,
) -> WorkerResult {
    let run = move || match cmd::dispatch(&ctx, request) {
        Ok((reply, _caller)) => {
            // Still as the caller, after the listing or mkdir: may the lease stand?
            let policy = wanted_dir
                .map(|d| crate::coordination::lease_policy::decided_by_mode(&ctx.export, &d));
            (Ok(reply), policy)
        }
        Err(e) => (Err(e), None),
    };
    match lane {
        Some(lane) => lane.run(run).await,
        None => tokio::task::spawn_blocking(run).await.map_err(|_| Panicked),
    }
}

/// Runs a Lock request: tries on a worker, and between tries waits parked
/// (no worker, no running slot) for the lock it waits on to be released, for the grace
/// period after a restart to end, or for the wait to be cancelled.
async fn run_lock(
    ctx: Ctx,
    request: Request,
    stream: StreamId,
    shared: &Shared,
    held: &mut crate::pipeline::slots::Held,
    mut closing: tokio::sync::watch::Receiver<bool>,
) -> Frame {
    use crate::coordination::locks::WaitState;
    let cmd = request.command.code();
    let started = std::time::Instant::now();
    let crate::request::Body::Lock(req) = request.body else {
        return Frame::error(cmd, stream, libc::EINVAL, "not a Lock request");
    };
    let mut waiter = None;
    let gone = (libc::ENOLCK, "the connection ended".to_string());
    let result = loop {
        let (c, r, w) = (ctx.clone(), req, waiter.clone());
        // As the server, not the caller: a lock is taken through a handle the caller
        // opened already (its access was checked then; a write lock needs a handle opened
        // for writing), and the server's own description for the owner must open whoever
        // asks (a reclaim after a restart comes from no process at all).
        let tried = tokio::task::spawn_blocking(move || cmd::lock_step(&c, &r, w.as_ref())).await;
        let ended = closing.wait_for(|c| *c);
        match tried {
            Err(e) => break Err((libc::EIO, format!("request task failed: {e}"))),
            Ok(Err(e)) => break Err((e.errno(), e.to_string())),
            Ok(Ok(cmd::LockStep::Reply(r))) => break Ok(r),
            Ok(Ok(cmd::LockStep::Grace)) => {
                let over = ctx.locks.locks.grace.over();
                let closed = held
                    .apart(async {
                        tokio::select! {
                            _ = over => false,
                            _ = ended => true,
                        }
                    })
                    .await;
                if closed {
                    break Err(gone);
                }
            }
            Ok(Ok(cmd::LockStep::Wait(w))) => {
                let state = held
                    .apart(async {
                        tokio::select! {
                            s = w.wait() => Some(s),
                            _ = ended => None,
                        }
                    })
                    .await;
                waiter = Some(w);
                match state {
                    Some(WaitState::Woken | WaitState::Waiting) => {}
                    Some(WaitState::Cancelled) => {
                        waiter = None;
                        break Err((libc::EINTR, "the wait was cancelled".into()));
                    }
                    Some(WaitState::Ended) => {
                        waiter = None;
                        break Err((libc::ENOLCK, "the session ended".into()));
                    }
                    None => break Err(gone),
                }
            }
        }
    };
    if let (Some(w), Err(_)) = (&waiter, &result) {
        ctx.locks.locks.abandon(w);
    }
    shared
        .stats
        .commands
        .observe(cmd, started.elapsed(), result.is_ok());
    match result {
        Ok(reply) => Frame::response(cmd, stream, &reply, Bytes::new()),
        Err((errno, why)) => {
            debug!(cmd, stream = stream.0, "lock request failed: {why}");
            Frame::error(cmd, stream, errno, why)
        }
    }
}

/// Opens the transport (TLS or plaintext) and runs the handshake within its deadline.
/// None when the connection ends there (logged; a listing of exports ends it too).
async fn authenticate(
    socket: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Option<(
    FramedRead<protocol::stream::BoxRead, FrameCodec>,
    transport::Writer,
    handshake::Authenticated,
    bool,
)> {
    let _ = socket.set_nodelay(true);
    let deadline = shared.config.handshake_timeout;
    let opened =
        match tokio::time::timeout(deadline, transport::open(socket, &shared.transport)).await {
            Ok(Ok(o)) => o,
            // Before any proof: anyone can cause these (a port scan, a probe), so they are
            // not warnings an operator must act on.
            Ok(Err(e)) => {
                info!(%peer, "connection refused: {e}");
                return None;
            }
            Err(_) => {
                info!(%peer, "no preamble and TLS handshake within {deadline:?}");
                return None;
            }
        };
    let opened_plain = opened.wr.socket().is_some();
    let mut wr = opened.wr;
    let mut reader = FramedRead::new(opened.rd, FrameCodec::new(Limits::HANDSHAKE));
    match handshake::accept(&mut reader, &mut wr, shared, peer, &opened.binding).await {
        Ok(auth) => {
            shared.stats.authenticated.fetch_add(1, Ordering::Relaxed);
            Some((reader, wr, auth, opened_plain))
        }
        Err(handshake::HandshakeError::Listed(token)) => {
            info!(%peer, token, "listed the exports this token may mount");
            None
        }
        Err(e @ (handshake::HandshakeError::Closed | handshake::HandshakeError::Timeout(_))) => {
            info!(%peer, "handshake failed: {e}");
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            None
        }
        Err(e) => {
            warn!(%peer, "handshake failed: {e}");
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// One decoded request, taken off the reader with what it needs to run on its own task.
struct RequestTask {
    ctx: Ctx,
    tx: mpsc::Sender<Outgoing>,
    session: Arc<crate::coordination::session::Session>,
    unsent: Arc<Semaphore>,
    stats: Arc<ConnStats>,
    shared: Arc<Shared>,
    /// This connection takes Notify frames.
    subscribed: bool,
    me: leases::Holder,
    conn_id: u64,
    frame: Frame,
    request: Request,
    paths: Vec<Bytes>,
    told_by_handle: Option<u64>,
    /// True once the connection ended.
    closing: tokio::sync::watch::Receiver<bool>,
    lane: Arc<Lane>,
}

impl RequestTask {
    /// Waits for its turn (ordering) and for the leases it reaches into (recalls, holding
    /// `held` only while it runs), runs or replays it, tells others, and queues the reply.
    async fn run(
        self,
        mut held: crate::pipeline::slots::Held,
        mut turn: crate::coordination::ordering::Turn,
    ) {
        let RequestTask {
            ctx,
            tx,
            session,
            unsent,
            stats,
            shared,
            subscribed,
            me,
            conn_id,
            frame,
            request,
            paths,
            told_by_handle,
            closing,
            lane,
        } = self;
        // After the requests on its handle it must follow (see `ordering`).
        turn.wait().await;
        // A Lock may wait for as long as another client holds the lock: nothing is ordered
        // after it (an ORDERED request naming no path, such as a lease give-back, would
        // wait for it otherwise), so its turn ends here.
        let turn = (!matches!(request.body, crate::request::Body::Lock(_))).then_some(turn);
        // Admitted (no lease it reaches into is granted until it ends), after other
        // sessions gave back the leases it reaches into. Leases are keyed below the
        // configured export (a subtree's paths within it).
        let mut lease_paths: Vec<Bytes> = paths.iter().map(|p| ctx.export.lease_path(p)).collect();
        // A change through a handle names no path: while anyone holds a lease, the file's
        // current name is what it reaches into (another mount's attributes and opens kept
        // under a lease there are recalled first, as for a change by name).
        lease_paths.extend(changed_through_handle(&ctx, &request, &shared));
        let mut subtrees: Vec<Bytes> = request
            .subtrees()
            .iter()
            .map(|p| ctx.export.lease_path(p))
            .collect();
        let export = &ctx.export.lease_root;
        // A lease is granted only where no other session holds one below (two sessions'
        // leases never nest, see `leases`): a request that asks for one recalls those first.
        if let (Some(dir), Some(h)) = (request.wanted_lease(), &ctx.leases) {
            let dir = ctx.export.lease_path(&dir);
            let who = (&h.token, &ctx.export.within[..]);
            let now = std::time::Instant::now();
            if shared.leases.may_grant(export, &dir, &me, who, now)
                && shared.leases.others_may_hold_below(export, &dir, &me)
            {
                subtrees.push(dir);
            }
        }
        let reach = (&lease_paths[..], &subtrees[..]);
        // One that waits for a recall lets this client's lease give-backs pass (see
        // `ordering`).
        let passable = turn.as_ref();
        let _admitted = recall_leases(&shared, export, &me, reach, &mut held, passable).await;
        // What others must be told if it succeeds (by identity: taken before a Close),
        // worked out only if anyone else listens.
        let mut told = Vec::new();
        if shared.changes.listened(&ctx.export.dir, subscribed) {
            told = changes::of_request(&request);
            if let Some(h) = told_by_handle {
                told.extend(ctx.handles.get(h).ok().and_then(|f| changes::of_file(&f)));
            }
        }
        let export_dir = ctx.export.dir.clone();
        // A Read reply's bytes are reserved before it runs: what a connection has read and
        // not yet sent stays within its budget, however slowly the client reads.
        let budget = match request.read_len(ctx.max_data) {
            0 => None,
            n => unsent.acquire_many_owned(n).await.ok(),
        };
        let (reply, file) = if request.command.replayable() {
            match session.replies.claim(&frame) {
                Claim::Run => {
                    let stream = frame.stream_id.0;
                    let (reply, _) =
                        run_request(ctx, request, frame.stream_id, &shared, &lane).await;
                    session.replies.complete(stream, &without_prefetch(&reply));
                    (reply, None)
                }
                Claim::Replay(mut first) => {
                    debug!(
                        stream = frame.stream_id.0,
                        "replaying the reply of a resent request"
                    );
                    let first = match first.wait_for(|r| r.is_some()).await {
                        Ok(r) => r.clone().expect("waited for Some"),
                        Err(_) => Frame::error(
                            frame.cmd,
                            frame.stream_id,
                            libc::EIO,
                            "original request lost",
                        ),
                    };
                    (first, None)
                }
            }
        } else if matches!(request.body, crate::request::Body::Lock(_)) {
            let stream = frame.stream_id;
            (
                run_lock(ctx, request, stream, &shared, &mut held, closing).await,
                None,
            )
        } else {
            run_request(ctx, request, frame.stream_id, &shared, &lane).await
        };
        if !reply.is_error() {
            // Published before the reply goes: others hear of it no later than this client
            // learns it is done.
            shared
                .changes
                .publish(&export_dir, conn_id, subscribed, told);
        }
        let file_len = file.as_ref().map_or(0, |f| f.len as usize);
        stats.reply_out(&shared.stats, frame_len(&reply) + file_len);
        let _ = tx
            .send(Outgoing {
                frame: reply,
                file,
                _budget: budget,
            })
            .await;
        drop(held);
        drop(turn);
    }
}

/// The file a Write, SetAttr through a handle, Fallocate or CopyRange (its destination)
/// changes, as leases key it (relative to the outermost export), while any lease is held:
/// its current name, from the kernel (`/proc/self/fd`). None for a file with no name left
/// or outside the export, and when no lease is held (nothing to recall; no system call).
/// A file with several names is reached by its first one only.
fn changed_through_handle(ctx: &Ctx, request: &Request, shared: &Shared) -> Option<Bytes> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    if shared.leases.held() == 0 {
        return None;
    }
    let (cmd, handle) = request.on_handle()?;
    if !matches!(
        cmd,
        Command::Write | Command::SetAttr | Command::Fallocate | Command::CopyRange
    ) {
        return None;
    }
    let file = ctx.handles.get(handle).ok()?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    let within = real.strip_prefix(&ctx.export.lease_root).ok()?;
    let within = within.as_os_str().as_bytes();
    if within.is_empty() || within.ends_with(b" (deleted)") {
        return None;
    }
    Some(Bytes::copy_from_slice(within))
}

/// Reads of at most this many bytes run on the connection's reader task until they wait.
const INLINE_READ_MAX: u32 = 64 << 10;

/// An error that says only that the peer went away.
fn peer_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

async fn goodbye(tx: &mpsc::Sender<Outgoing>, peer: SocketAddr, e: ProtocolError) {
    warn!(%peer, "closing connection: {e}");
    let frame = Frame::error(
        Command::Goodbye.code(),
        StreamId::CONTROL,
        libc::EPROTO,
        e.to_string(),
    );
    let _ = tx.send(Outgoing::message(frame)).await;
}

/// A reply queued for the writer (with the file range that is its data section, for Read
/// by sendfile), and the share of the connection's unsent-bytes budget it holds until
/// written.
struct Outgoing {
    frame: Frame,
    file: Option<FileData>,
    _budget: Option<OwnedSemaphorePermit>,
}

impl Outgoing {
    /// A frame with no file data and no budget held (errors, notices, goodbyes).
    fn message(frame: Frame) -> Outgoing {
        Outgoing {
            frame,
            file: None,
            _budget: None,
        }
    }
}

impl Queued for Outgoing {
    fn frame(&self) -> &Frame {
        &self.frame
    }

    fn file_data(&self) -> Option<&FileData> {
        self.file.as_ref()
    }
}

/// The reply bytes one connection may have read and not yet sent.
fn unsent_budget(max_data: u32) -> usize {
    crate::defaults::UNSENT_REPLY_BYTES.max(2 * max_data as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(frame: &Frame) -> proto::Notify {
        frame.decode_msg("Notify").expect("a Notify")
    }

    /// A listener that fell behind on changes gets "everything changed" for what it lost,
    /// and its recalls all the same, first: they never travel on the lossy broadcast.
    #[tokio::test]
    async fn a_lagging_listener_gets_its_recalls_and_is_told_everything_changed() {
        let (changes, rx) = broadcast::channel(4);
        for i in 0..10 {
            let change = proto::Change {
                dir: format!("e{i}").into(),
                ..Default::default()
            };
            changes
                .send(changes::Published {
                    origin: 1,
                    changes: Arc::new(vec![change]),
                })
                .unwrap();
        }
        let queue = Arc::new(crate::coordination::recalls::Queue::default());
        queue.push(Bytes::from_static(b"d"));
        let (tx, mut out) = mpsc::channel(64);
        let forwarder = tokio::spawn(forward_changes(rx, 2, Some(queue.clone()), tx));
        let first = notice(&out.recv().await.unwrap().frame);
        assert_eq!(
            first.recall,
            vec![Bytes::from_static(b"d")],
            "the recall first"
        );
        let lost = notice(&out.recv().await.unwrap().frame);
        assert!(
            lost.changes.iter().any(|c| c.everything),
            "then what was lost"
        );
        for _ in 0..4 {
            let kept = notice(&out.recv().await.unwrap().frame);
            assert!(kept.recall.is_empty() && !kept.changes[0].everything);
        }
        queue.push(Bytes::from_static(b"later"));
        let later = notice(&out.recv().await.unwrap().frame);
        assert_eq!(later.recall, vec![Bytes::from_static(b"later")]);
        // Its connection gone, a recall taken and not sent is kept for the next one.
        drop(out);
        queue.push(Bytes::from_static(b"unsent"));
        forwarder.await.unwrap();
        assert_eq!(
            queue.take(),
            Some(crate::coordination::recalls::Batch::Paths(vec![
                Bytes::from_static(b"unsent")
            ]))
        );
    }
}
