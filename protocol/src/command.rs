//! Command codes. A code is stable forever once released; new commands take new codes.

use crate::ProtocolError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Command {
    /// Handshake: server `Challenge`, client `AuthRequest`, server `AuthReply`.
    Auth = 1,
    Ping = 2,
    Lookup = 3,
    GetAttr = 4,
    SetAttr = 5,
    List = 6,
    Statfs = 7,
    Open = 8,
    Create = 9,
    Read = 10,
    Write = 11,
    Fsync = 12,
    Close = 13,
    Mkdir = 14,
    Remove = 15,
    Rename = 16,
    Symlink = 17,
    Readlink = 18,
    Link = 19,
    /// Sent by either side on stream 0 just before closing for a protocol error.
    Goodbye = 20,
    Mknod = 21,
    GetXattr = 22,
    SetXattr = 23,
    ListXattr = 24,
    RemoveXattr = 25,
    CopyRange = 26,
    Fallocate = 27,
    Lseek = 28,
}

impl Command {
    pub const ALL: [Command; 28] = [
        Command::Auth,
        Command::Ping,
        Command::Lookup,
        Command::GetAttr,
        Command::SetAttr,
        Command::List,
        Command::Statfs,
        Command::Open,
        Command::Create,
        Command::Read,
        Command::Write,
        Command::Fsync,
        Command::Close,
        Command::Mkdir,
        Command::Remove,
        Command::Rename,
        Command::Symlink,
        Command::Readlink,
        Command::Link,
        Command::Goodbye,
        Command::Mknod,
        Command::GetXattr,
        Command::SetXattr,
        Command::ListXattr,
        Command::RemoveXattr,
        Command::CopyRange,
        Command::Fallocate,
        Command::Lseek,
    ];

    pub const fn code(self) -> u16 {
        self as u16
    }
}

impl TryFrom<u16> for Command {
    type Error = ProtocolError;
    fn try_from(code: u16) -> Result<Command, ProtocolError> {
        Command::ALL
            .iter()
            .copied()
            .find(|c| c.code() == code)
            .ok_or(ProtocolError::UnknownCommand(code))
    }
}
