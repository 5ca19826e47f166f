//! The server's commands, one file per command, dispatched from the protocol's command table
//! (`protocol::command_table!`): this module adds no list of its own.
//!
//! Each handler file has `apply(ctx, request) -> Result<Reply<R>, FsError>` (Write also gets
//! the request's data section); the table fixes its request and reply types, so a handler
//! whose types disagree with the table does not compile. The request comes decoded and
//! validated (`request`); before a handler runs, dispatch refuses, on a read-only export,
//! any command the table marks as mutating (EROFS). Handlers block: they run on blocking
//! threads, except the `try_at_once` variants (`at_once`), which never wait.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use protocol::writer::FileData;

use crate::access::credentials;
use crate::error::FsError;
use crate::export::Export;
use crate::handles::Handles;
use crate::request::{Body, Request};

#[allow(unsafe_code)]
mod dir_stream;
#[allow(unsafe_code)]
mod xattr;

/// What a command may touch: its export and the session's open handles.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub export: Arc<Export>,
    pub handles: Arc<Handles>,
    /// Largest data section this connection sends or accepts.
    pub max_data: u32,
    /// The export, or this connection's token grant on it, is read-only.
    pub read_only: bool,
    /// Read replies may go out with sendfile(2) (a plain TCP connection, not disabled).
    pub sendfile: bool,
    /// The server's leases and this session's id, if the client may hold leases.
    pub leases: Option<crate::coordination::leases::LeaseHolder>,
    /// The server's locks and who asks (this session, its token).
    pub locks: LockHolder,
    /// The files exclusive creates made, by verifier.
    pub create_verifiers: Arc<crate::coordination::create_verifiers::CreateVerifiers>,
}

/// The server's locks, seen from one session.
#[derive(Debug, Clone)]
pub struct LockHolder {
    pub locks: Arc<crate::coordination::locks::Locks>,
    pub who: crate::coordination::locks::Who,
}

impl Ctx {
    /// EROFS unless changes are allowed on this connection.
    pub fn writable(&self) -> Result<(), FsError> {
        if self.read_only {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }
}

/// A successful reply: its message and data section (empty but for Read), or a file range
/// the writer sends as the data section (Read by sendfile).
#[derive(Debug)]
pub struct Reply<R> {
    pub msg: R,
    pub data: Bytes,
    pub file: Option<FileData>,
}

impl<R: Message> Reply<R> {
    pub fn msg(msg: R) -> Reply<R> {
        Reply {
            msg,
            data: Bytes::new(),
            file: None,
        }
    }

    pub fn with_data(msg: R, data: Bytes) -> Reply<R> {
        Reply {
            msg,
            data,
            file: None,
        }
    }

    /// A reply whose data section is `file`'s range, sent from the page cache.
    pub fn from_file(msg: R, file: FileData) -> Reply<R> {
        Reply {
            msg,
            data: Bytes::new(),
            file: Some(file),
        }
    }

    fn encode(self) -> Encoded {
        Encoded {
            msg: self.msg.encode_to_vec().into(),
            data: self.data,
            file: self.file,
        }
    }
}

/// A reply ready for the wire: encoded message and data section (or the file range that is
/// its data section).
#[derive(Debug)]
pub struct Encoded {
    pub msg: Bytes,
    pub data: Bytes,
    pub file: Option<FileData>,
}

/// Calls a handler with the data section only if its command carries one.
macro_rules! call_handler {
    (request, $handler:ident, $ctx:ident, $req:ident, $data:ident) => {
        $handler::apply($ctx, $req, $data)
    };
    ($other:ident, $handler:ident, $ctx:ident, $req:ident, $data:ident) => {
        $handler::apply($ctx, $req)
    };
}

macro_rules! define_dispatch {
    (
        control { $( $(#[doc = $cdoc:literal])* $control:ident = $ccode:literal, )* }
        requests { $(
            $name:ident = $code:literal, $handler:ident, $req:ident -> $rep:ident,
            data: $data:ident, mutates: $mutates:literal, replay: $replay:literal;
        )* }
    ) => {
        $( mod $handler; )*

        /// Runs a request whose policy checks passed.
        fn run(ctx: &Ctx, body: Body, data: Bytes) -> Result<Encoded, FsError> {
            match body {
                $( Body::$name(req) => {
                    let reply: Reply<proto::$rep> = call_handler!($data, $handler, ctx, req, data)?;
                    Ok(reply.encode())
                } )*
            }
        }
    };
}

protocol::command_table!(define_dispatch);

/// One try at a Lock request, for the connection that parks its waits (see `lock`).
pub use lock::{step as lock_step, Step as LockStep};

/// Runs one decoded request as its caller (see `credentials`). Blocking: call from a
/// blocking thread. The thread stays the caller's until the returned guard is dropped (what
/// the connection checks after the request, as the caller, runs before that).
pub fn dispatch(ctx: &Ctx, request: Request) -> Result<(Encoded, credentials::AsCaller), FsError> {
    if request.command.mutates() {
        ctx.writable()?;
    }
    let caller = credentials::as_caller(&ctx.export.identity.map(request.credentials))?;
    let reply = run(ctx, request.body, request.data)?;
    Ok((reply, caller))
}

/// `AttrReply` carrying `attr`.
fn attr_reply(attr: proto::Attr) -> Reply<proto::AttrReply> {
    Reply::msg(proto::AttrReply {
        attr: Some(attr),
        lease_ms: 0,
        budget: None,
        owner: None,
    })
}

/// A request served on the calling thread when that cannot block (`read::try_at_once`,
/// `open::try_at_once`, `close::try_at_once`): its reply, or None to run it on a worker as
/// usual.
pub fn at_once(ctx: &Ctx, request: &Request) -> Option<Result<Encoded, FsError>> {
    match &request.body {
        Body::Read(req) => read::try_at_once(ctx, req).map(|r| r.map(Reply::encode)),
        Body::Open(req) => {
            let who = ctx.export.identity.map(request.credentials.clone());
            open::try_at_once(ctx, req, &who).map(|r| r.map(Reply::encode))
        }
        Body::Close(req) => close::try_at_once(ctx, req).map(|r| r.map(Reply::encode)),
        _ => None,
    }
}
