//! The command table: every command of the protocol, written once.
//!
//! [`command_table!`] holds one row per command: its code (stable forever once released), the
//! server's handler module, the request and reply messages, where a data section travels,
//! whether it changes the export, and whether a resent copy must get the first execution's
//! reply instead of running again. Everything else is derived from it: [`Command`] and its
//! lookups here, the marker types of [`crate::rpc`] the client calls through, the server's
//! dispatch, its read-only check and its replay policy. Adding a command means adding a row
//! here and writing its handler file; nothing else lists commands.

/// Calls `$callback! { control { ... } requests { ... } }` with the table.
///
/// - `control`: frames of the connection itself (stream 0), never dispatched as requests.
/// - `requests`: `Name = code, handler, Request -> Reply, data: none|request|reply,
///   mutates: bool, replay: bool;`
///   - `handler`: the server's `cmd::<handler>` module (its `apply` runs the request);
///   - `data`: which side carries a raw data section (anything else must send none);
///   - `mutates`: the request changes the export, so a read-only export refuses it with
///     EROFS before the handler runs (Open checks its own flags: only writing opens change);
///   - `replay`: a second execution would differ from the first (or allocate a second
///     handle): the session caches its reply and answers a resent copy from it.
#[macro_export]
macro_rules! command_table {
    ($callback:ident) => {
        $callback! {
            control {
                /// Handshake: server `Challenge`, client `AuthRequest`, server `AuthReply`.
                Auth = 1,
                /// Sent on stream 0 just before a side closes for a protocol error.
                Goodbye = 20,
                /// Server -> client on stream 0, unsolicited, to a client that asked for them
                /// at the handshake: what other clients changed (`Notify`).
                Notify = 30,
            }
            requests {
                Ping = 2, ping, Ping -> Ping, data: none, mutates: false, replay: false;
                Lookup = 3, lookup, LookupRequest -> AttrReply, data: none, mutates: false, replay: false;
                GetAttr = 4, getattr, GetAttrRequest -> AttrReply, data: none, mutates: false, replay: false;
                SetAttr = 5, setattr, SetAttrRequest -> AttrReply, data: none, mutates: true, replay: true;
                List = 6, list, ListRequest -> ListReply, data: none, mutates: false, replay: false;
                Statfs = 7, statfs, StatfsRequest -> StatfsReply, data: none, mutates: false, replay: false;
                Open = 8, open, OpenRequest -> OpenReply, data: none, mutates: false, replay: true;
                Create = 9, create, CreateRequest -> OpenReply, data: none, mutates: true, replay: true;
                Read = 10, read, ReadRequest -> ReadReply, data: reply, mutates: false, replay: false;
                Write = 11, write, WriteRequest -> WriteReply, data: request, mutates: true, replay: true;
                Fsync = 12, fsync, FsyncRequest -> Empty, data: none, mutates: false, replay: false;
                Close = 13, close, CloseRequest -> Empty, data: none, mutates: false, replay: true;
                Mkdir = 14, mkdir, MkdirRequest -> AttrReply, data: none, mutates: true, replay: true;
                Remove = 15, remove, RemoveRequest -> Empty, data: none, mutates: true, replay: true;
                Rename = 16, rename, RenameRequest -> RenameReply, data: none, mutates: true, replay: true;
                Symlink = 17, symlink, SymlinkRequest -> AttrReply, data: none, mutates: true, replay: true;
                Readlink = 18, readlink, ReadlinkRequest -> ReadlinkReply, data: none, mutates: false, replay: false;
                Link = 19, link, LinkRequest -> AttrReply, data: none, mutates: true, replay: true;
                Mknod = 21, mknod, MknodRequest -> AttrReply, data: none, mutates: true, replay: true;
                GetXattr = 22, get_xattr, GetXattrRequest -> XattrReply, data: none, mutates: false, replay: false;
                SetXattr = 23, set_xattr, SetXattrRequest -> Empty, data: none, mutates: true, replay: true;
                ListXattr = 24, list_xattr, ListXattrRequest -> ListXattrReply, data: none, mutates: false, replay: false;
                RemoveXattr = 25, remove_xattr, RemoveXattrRequest -> Empty, data: none, mutates: true, replay: true;
                CopyRange = 26, copy_range, CopyRangeRequest -> CopyRangeReply, data: none, mutates: true, replay: true;
                Fallocate = 27, fallocate, FallocateRequest -> Empty, data: none, mutates: true, replay: true;
                Lseek = 28, lseek, LseekRequest -> LseekReply, data: none, mutates: false, replay: false;
                Lease = 29, lease, LeaseRequest -> LeaseReply, data: none, mutates: false, replay: false;
                Lock = 31, lock, LockRequest -> LockReply, data: none, mutates: false, replay: false;
            }
        }
    };
}

/// Where a command's raw data section travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSection {
    /// Neither side sends one.
    None,
    /// The request carries data (Write).
    Request,
    /// The reply carries data (Read).
    Reply,
}

macro_rules! data_section {
    (none) => {
        DataSection::None
    };
    (request) => {
        DataSection::Request
    };
    (reply) => {
        DataSection::Reply
    };
}

macro_rules! define_commands {
    (
        control { $( $(#[doc = $cdoc:literal])* $control:ident = $ccode:literal, )* }
        requests { $(
            $name:ident = $code:literal, $handler:ident, $req:ident -> $rep:ident,
            data: $data:ident, mutates: $mutates:literal, replay: $replay:literal;
        )* }
    ) => {
        /// A command code; see [`command_table!`] for what each carries.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Command {
            $( $(#[doc = $cdoc])* $control = $ccode, )*
            $( #[doc = concat!("`", stringify!($req), "` -> `", stringify!($rep), "`")] $name = $code, )*
        }

        impl Command {
            /// Every command, control ones first.
            pub const ALL: &'static [Command] = &[ $( Command::$control, )* $( Command::$name, )* ];

            pub const fn code(self) -> u16 {
                self as u16
            }

            /// True for requests a client sends after the handshake (not control frames).
            pub const fn is_request(self) -> bool {
                !matches!(self, $( Command::$control )|*)
            }

            /// True if the request changes the export (refused on a read-only one).
            pub const fn mutates(self) -> bool {
                match self {
                    $( Command::$name => $mutates, )*
                    _ => false,
                }
            }

            /// True if a resent copy of the request must be answered with the reply of its
            /// first execution (the session's reply cache).
            pub const fn replayable(self) -> bool {
                match self {
                    $( Command::$name => $replay, )*
                    _ => false,
                }
            }

            /// Which side of the exchange carries a raw data section.
            pub const fn data_section(self) -> DataSection {
                match self {
                    $( Command::$name => data_section!($data), )*
                    _ => DataSection::None,
                }
            }
        }

        /// One marker type per request, tying its command to its request and reply messages,
        /// so a caller cannot send one command's message or decode another's reply.
        pub mod rpc {
            use super::Command;

            /// A request of the protocol: its command and its message types.
            pub trait Rpc {
                const COMMAND: Command;
                type Request: prost::Message + Default;
                type Reply: prost::Message + Default;
            }

            $(
                #[doc = concat!("`", stringify!($req), "` -> `", stringify!($rep), "`")]
                #[derive(Debug, Clone, Copy)]
                pub struct $name;

                impl Rpc for $name {
                    const COMMAND: Command = Command::$name;
                    type Request = proto::$req;
                    type Reply = proto::$rep;
                }
            )*
        }
    };
}

command_table!(define_commands);

impl TryFrom<u16> for Command {
    type Error = crate::ProtocolError;
    fn try_from(code: u16) -> Result<Command, crate::ProtocolError> {
        Command::ALL
            .iter()
            .copied()
            .find(|c| c.code() == code)
            .ok_or(crate::ProtocolError::UnknownCommand(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut codes: Vec<u16> = Command::ALL.iter().map(|c| c.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Command::ALL.len());
        for c in Command::ALL {
            assert_eq!(Command::try_from(c.code()).ok(), Some(*c));
        }
    }

    #[test]
    fn control_frames_are_not_requests_and_mutations_replay() {
        assert!(!Command::Auth.is_request() && !Command::Goodbye.is_request());
        assert!(Command::Lookup.is_request() && !Command::Lookup.mutates());
        // Whatever changes the export must not run twice when resent.
        for c in Command::ALL.iter().filter(|c| c.mutates()) {
            assert!(c.replayable(), "{c:?} mutates but is not replayed");
        }
        assert_eq!(Command::Write.data_section(), DataSection::Request);
        assert_eq!(Command::Read.data_section(), DataSection::Reply);
    }
}
