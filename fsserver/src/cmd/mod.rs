//! One file per command. Each has `apply(ctx, request) -> Result<Reply, FsError>`; its doc
//! comment names the request and reply messages. Commands run on blocking threads.

use bytes::Bytes;
use prost::Message;
use protocol::Command;
use std::sync::Arc;

use crate::error::FsError;
use crate::export::Export;
use crate::handles::Handles;

mod close;
mod copy_range;
mod create;
mod fallocate;
mod fsync;
mod getattr;
mod link;
mod list;
mod lookup;
mod lseek;
mod mkdir;
mod mknod;
mod open;
mod read;
mod readlink;
mod remove;
mod rename;
mod setattr;
mod statfs;
mod symlink;
mod write;
mod xattr;

/// What a command may touch: its export and the connection's open handles.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub export: Arc<Export>,
    pub handles: Arc<Handles>,
    /// Largest data section this connection sends or accepts.
    pub max_data: u32,
}

/// A successful reply: encoded message and data section.
#[derive(Debug)]
pub struct Reply {
    pub msg: Bytes,
    pub data: Bytes,
}

impl Reply {
    pub fn msg(m: &impl Message) -> Reply {
        Reply {
            msg: m.encode_to_vec().into(),
            data: Bytes::new(),
        }
    }

    pub fn with_data(m: &impl Message, data: Bytes) -> Reply {
        Reply {
            msg: m.encode_to_vec().into(),
            data,
        }
    }
}

fn parse<M: Message + Default>(msg: Bytes) -> Result<M, FsError> {
    M::decode(msg).map_err(|e| FsError::BadRequest(e.to_string()))
}

/// Runs one request. Blocking: call from a blocking thread.
pub fn dispatch(ctx: &Ctx, cmd: u16, msg: Bytes, data: Bytes) -> Result<Reply, FsError> {
    let command = Command::try_from(cmd).map_err(|_| FsError::UnknownCommand(cmd))?;
    match command {
        Command::Ping => Ok(Reply::msg(&proto::Ping {})),
        Command::Lookup => lookup::apply(ctx, parse(msg)?),
        Command::GetAttr => getattr::apply(ctx, parse(msg)?),
        Command::SetAttr => setattr::apply(ctx, parse(msg)?),
        Command::List => list::apply(ctx, parse(msg)?),
        Command::Statfs => statfs::apply(ctx, parse(msg)?),
        Command::Open => open::apply(ctx, parse(msg)?),
        Command::Create => create::apply(ctx, parse(msg)?),
        Command::Read => read::apply(ctx, parse(msg)?),
        Command::Write => write::apply(ctx, parse(msg)?, data),
        Command::Fsync => fsync::apply(ctx, parse(msg)?),
        Command::Close => close::apply(ctx, parse(msg)?),
        Command::Mkdir => mkdir::apply(ctx, parse(msg)?),
        Command::Remove => remove::apply(ctx, parse(msg)?),
        Command::Rename => rename::apply(ctx, parse(msg)?),
        Command::Symlink => symlink::apply(ctx, parse(msg)?),
        Command::Readlink => readlink::apply(ctx, parse(msg)?),
        Command::Link => link::apply(ctx, parse(msg)?),
        Command::Mknod => mknod::apply(ctx, parse(msg)?),
        Command::GetXattr => xattr::get(ctx, parse(msg)?),
        Command::SetXattr => xattr::set(ctx, parse(msg)?),
        Command::ListXattr => xattr::list(ctx, parse(msg)?),
        Command::RemoveXattr => xattr::remove(ctx, parse(msg)?),
        Command::CopyRange => copy_range::apply(ctx, parse(msg)?),
        Command::Fallocate => fallocate::apply(ctx, parse(msg)?),
        Command::Lseek => lseek::apply(ctx, parse(msg)?),
        Command::Auth | Command::Goodbye => Err(FsError::BadRequest(format!(
            "{command:?} is not a request after the handshake"
        ))),
    }
}

/// `AttrReply` for a stat result.
fn attr_reply(st: &nix::sys::stat::FileStat) -> Reply {
    Reply::msg(&proto::AttrReply {
        attr: Some(crate::attr::from_stat(st)),
    })
}
