//! A request as the server takes it: decoded once, on the connection's reader, into the
//! typed message the command table gives its command, and validated before any bookkeeping
//! (ordering, leases, change notification, replay, dispatch) looks at it. What fails here
//! gets an error reply at once and costs nothing more.
//!
//! The rules (see PROTOCOL.md, "Paths"):
//! - a path is relative and canonical: empty for the export's root, else names joined by
//!   single `/`, none of them empty, `.` or `..`, none holding a NUL; `..`, a NUL or a leading `/`
//!   is EXDEV (it would leave the export), any other non-canonical spelling EINVAL;
//! - a name is one component of at most `NAME_MAX` bytes (ENAMETOOLONG beyond);
//! - a path is at most `MAX_PATH` bytes (ENAMETOOLONG beyond), a symlink's target at most
//!   `PATH_MAX - 1`, an xattr name `XATTR_NAME_MAX` and its value `XATTR_SIZE_MAX`;
//! - a Lease request returns at most `MAX_RETURNED` paths.
//!
//! So every later step costs time and memory linear in the request's size, and every
//! spelling of a path is the one spelling leases and ordering compare.

use bytes::Bytes;
use prost::Message;
use protocol::{Command, DataSection, Flags, Frame};

use crate::error::FsError;

/// Longest name, as Linux's NAME_MAX.
pub const NAME_MAX: usize = 255;
/// Longest path a request may name. Four times Linux's PATH_MAX: a tree deeper than
/// PATH_MAX on the server is still reachable (the server resolves long paths in pieces),
/// and no request costs more than a few such paths.
pub const MAX_PATH: usize = 4 * 4096;
/// Longest symlink target (PATH_MAX with its NUL).
pub const SYMLINK_MAX: usize = 4095;
/// Longest extended attribute name and value, as Linux's XATTR_NAME_MAX and XATTR_SIZE_MAX.
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_SIZE_MAX: usize = 65536;
/// Most paths one Lease request gives back.
pub const MAX_RETURNED: usize = 65536;

macro_rules! define_body {
    (
        control { $( $(#[doc = $cdoc:literal])* $control:ident = $ccode:literal, )* }
        requests { $(
            $name:ident = $code:literal, $handler:ident, $req:ident -> $rep:ident,
            data: $data:ident, mutates: $mutates:literal, replay: $replay:literal;
        )* }
    ) => {
        /// A request's message, typed by its command.
        #[derive(Debug, Clone)]
        pub enum Body {
            $( $name(proto::$req), )*
        }

        impl Body {
            fn decode(command: Command, msg: Bytes) -> Result<Body, FsError> {
                match command {
                    $( Command::$name => proto::$req::decode(msg)
                        .map(Body::$name)
                        .map_err(|e| FsError::BadRequest(format!("{command:?}: {e}"))), )*
                    $( Command::$control )|* => Err(FsError::BadRequest(format!(
                        "{command:?} is not a request after the handshake"
                    ))),
                }
            }
        }
    };
}

protocol::command_table!(define_body);

/// A decoded, validated request.
#[derive(Debug, Clone)]
pub struct Request {
    pub command: Command,
    pub body: Body,
    /// Its data section (Write's bytes; empty otherwise).
    pub data: Bytes,
    /// Who the client says is calling (field 100 of the message), before squashing.
    pub credentials: Option<proto::Credentials>,
    /// Sent ORDERED: runs after everything it may depend on (see `ordering`).
    pub ordered: bool,
}

impl Request {
    /// Decodes and validates `frame` (a request frame on a request stream).
    pub fn decode(frame: &Frame) -> Result<Request, FsError> {
        let command =
            Command::try_from(frame.cmd).map_err(|_| FsError::UnknownCommand(frame.cmd))?;
        if !frame.data.is_empty() && command.data_section() != DataSection::Request {
            return Err(FsError::BadRequest(format!(
                "{command:?} carries no data section"
            )));
        }
        let credentials = protocol::credentials::of(&frame.msg).map_err(FsError::BadRequest)?;
        let body = Body::decode(command, frame.msg.clone())?;
        let request = Request {
            command,
            body,
            data: frame.data.clone(),
            credentials,
            ordered: frame.flags.contains(Flags::ORDERED),
        };
        request.check()?;
        Ok(request)
    }

    /// The request's paths and names against the rules of the module.
    fn check(&self) -> Result<(), FsError> {
        match &self.body {
            Body::Lookup(r) => path(&r.path),
            Body::GetAttr(r) => path(&r.path),
            Body::SetAttr(r) => path(&r.path),
            Body::List(r) => path(&r.path),
            Body::Open(r) => path(&r.path),
            Body::Create(r) => entry(&r.parent, &r.name),
            Body::Mkdir(r) => entry(&r.parent, &r.name),
            Body::Mknod(r) => entry(&r.parent, &r.name),
            Body::Remove(r) => entry(&r.parent, &r.name),
            Body::Symlink(r) => {
                entry(&r.parent, &r.name)?;
                match r.target.len() {
                    0 => Err(FsError::Sys(nix::errno::Errno::ENOENT)),
                    n if n > SYMLINK_MAX => Err(too_long("symlink target", n, SYMLINK_MAX)),
                    _ if r.target.contains(&0) => Err(FsError::BadName("a NUL byte".into())),
                    _ => Ok(()),
                }
            }
            Body::Rename(r) => {
                // NOREPLACE and EXCHANGE only (not WHITEOUT, which makes a device node).
                let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
                if r.flags & !known != 0 {
                    return Err(FsError::Sys(nix::errno::Errno::EINVAL));
                }
                entry(&r.parent, &r.name)?;
                entry(&r.new_parent, &r.new_name)
            }
            Body::Link(r) => {
                path(&r.path)?;
                entry(&r.new_parent, &r.new_name)
            }
            Body::Readlink(r) => path(&r.path),
            Body::GetXattr(r) => {
                path(&r.path)?;
                xattr_name(&r.name)
            }
            Body::SetXattr(r) => {
                path(&r.path)?;
                xattr_name(&r.name)?;
                match r.value.len() {
                    n if n > XATTR_SIZE_MAX => Err(FsError::Sys(nix::errno::Errno::E2BIG)),
                    _ => Ok(()),
                }
            }
            Body::ListXattr(r) => path(&r.path),
            Body::RemoveXattr(r) => {
                path(&r.path)?;
                xattr_name(&r.name)
            }
            Body::Lease(r) => {
                if r.returned.len() > MAX_RETURNED {
                    return Err(FsError::BadRequest(format!(
                        "{} leases given back in one request (at most {MAX_RETURNED})",
                        r.returned.len()
                    )));
                }
                r.returned.iter().try_for_each(|p| path(p))
            }
            Body::Ping(_)
            | Body::Statfs(_)
            | Body::Read(_)
            | Body::Write(_)
            | Body::Fsync(_)
            | Body::Close(_)
            | Body::CopyRange(_)
            | Body::Fallocate(_)
            | Body::Lseek(_) => Ok(()),
            Body::Lock(r) => lock(r),
        }
    }

    /// The paths it names: what leases are recalled for and requests are ordered by. A
    /// request through a handle names none (its path is the handle's, see `ordering`).
    pub fn paths(&self) -> Vec<Bytes> {
        match &self.body {
            Body::Lookup(r) => vec![r.path.clone()],
            Body::GetAttr(r) => (!r.has_handle)
                .then(|| r.path.clone())
                .into_iter()
                .collect(),
            Body::SetAttr(r) => (!r.has_handle)
                .then(|| r.path.clone())
                .into_iter()
                .collect(),
            Body::List(r) => vec![r.path.clone()],
            Body::Open(r) => vec![r.path.clone()],
            Body::Create(r) => vec![join(&r.parent, &r.name)],
            Body::Mkdir(r) => vec![join(&r.parent, &r.name)],
            Body::Mknod(r) => vec![join(&r.parent, &r.name)],
            Body::Symlink(r) => vec![join(&r.parent, &r.name)],
            Body::Remove(r) => vec![join(&r.parent, &r.name)],
            Body::Rename(r) => vec![join(&r.parent, &r.name), join(&r.new_parent, &r.new_name)],
            Body::Link(r) => vec![r.path.clone(), join(&r.new_parent, &r.new_name)],
            Body::Readlink(r) => vec![r.path.clone()],
            Body::GetXattr(r) => vec![r.path.clone()],
            Body::SetXattr(r) => vec![r.path.clone()],
            Body::ListXattr(r) => vec![r.path.clone()],
            Body::RemoveXattr(r) => vec![r.path.clone()],
            _ => Vec::new(),
        }
    }

    /// The open handle it acts through, with its command (Write, SetAttr through a handle,
    /// Fsync, Fallocate, Close, CopyRange's destination), or the handle it names for the
    /// file it creates or opens (what is sent through it before the reply follows it).
    pub fn on_handle(&self) -> Option<(Command, u64)> {
        let handle = match &self.body {
            Body::Write(r) => r.handle,
            Body::SetAttr(r) => r.has_handle.then_some(r.handle)?,
            Body::Fsync(r) => r.handle,
            Body::Fallocate(r) => r.handle,
            Body::Close(r) => r.handle,
            Body::Create(r) => r.handle,
            Body::Open(r) => r.handle,
            Body::CopyRange(r) => r.handle_out,
            _ => return None,
        };
        Some((self.command, handle))
    }

    /// The directory whose lease it asks for, if it does (a whole List of it, a Mkdir of it).
    pub fn wanted_lease(&self) -> Option<Bytes> {
        match &self.body {
            Body::List(r) => (r.want_lease && r.cookie == 0).then(|| r.path.clone()),
            Body::Mkdir(r) => r.want_lease.then(|| join(&r.parent, &r.name)),
            _ => None,
        }
    }

    /// The bytes a Read replies with at most (0 for other requests).
    pub fn read_len(&self, max_data: u32) -> u32 {
        match &self.body {
            Body::Read(r) => r.len.min(max_data),
            _ => 0,
        }
    }

    /// The new space it may take on the disk, (bytes, inodes), if any, and whether its
    /// session's budget covers it: a local answer (ORDERED) or a Write the client marked so.
    pub fn space_needed(&self) -> Option<((u64, u64), bool)> {
        let need = match &self.body {
            Body::Write(r) => return Some(((self.data.len() as u64, 0), r.budgeted)),
            Body::Create(_) | Body::Mknod(_) => (0, 1),
            Body::Mkdir(_) => (4096, 1),
            Body::Symlink(r) => (r.target.len() as u64, 1),
            Body::Fallocate(r) => (r.len, 0),
            Body::CopyRange(r) => (r.len, 0),
            _ => return None,
        };
        Some((need, self.ordered))
    }

    /// A rename's source and destination paths, and whether it swaps them.
    pub fn renamed(&self) -> Option<Renamed> {
        match &self.body {
            Body::Rename(r) => Some(Renamed {
                from: join(&r.parent, &r.name),
                to: join(&r.new_parent, &r.new_name),
                exchange: r.flags & libc::RENAME_EXCHANGE != 0,
            }),
            _ => None,
        }
    }

    /// The paths whose whole subtree it changes (every name below moves): a rename's two
    /// sides. Leases below them are recalled, not only those at and above.
    pub fn subtrees(&self) -> Vec<Bytes> {
        self.renamed()
            .map(|r| vec![r.from, r.to])
            .unwrap_or_default()
    }
}

/// What a Rename moves: `from` to `to`, and with `exchange` (RENAME_EXCHANGE) `to` to
/// `from` as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renamed {
    pub from: Bytes,
    pub to: Bytes,
    pub exchange: bool,
}

/// `parent/name` (`name` alone at the root).
pub fn join(parent: &[u8], name: &[u8]) -> Bytes {
    if parent.is_empty() {
        return Bytes::copy_from_slice(name);
    }
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    p.push(b'/');
    p.extend_from_slice(name);
    p.into()
}

/// The hashes of `path`'s prefixes at each component boundary, in one pass over it: for
/// `a/b/c`, those of `` (the root), `a`, `a/b` and `a/b/c`, each with its length. `start`
/// carries whatever is hashed before the path (an export). A path's own hash is the last;
/// the same path hashed alone or as a prefix of a longer one gives the same value (the
/// pieces fed in are the same), so tables keyed by these find a path's ancestors in time
/// linear in its length, not quadratic.
pub fn prefix_hashes<H: std::hash::Hasher + Clone>(mut start: H, path: &[u8]) -> Vec<(usize, u64)> {
    let mut out = Vec::with_capacity(8);
    out.push((0, start.clone().finish()));
    let mut from = 0;
    for end in path
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(|(i, _)| i)
        .chain((!path.is_empty()).then_some(path.len()))
    {
        start.write(&path[from..end]);
        out.push((end, start.clone().finish()));
        from = end;
    }
    out
}

fn too_long(what: &str, len: usize, max: usize) -> FsError {
    tracing::debug!("{what} of {len} bytes refused (at most {max})");
    FsError::Sys(nix::errno::Errno::ENAMETOOLONG)
}

/// A path by the rules of the module.
fn path(p: &[u8]) -> Result<(), FsError> {
    if p.is_empty() {
        return Ok(());
    }
    if p.len() > MAX_PATH {
        return Err(too_long("path", p.len(), MAX_PATH));
    }
    if p[0] == b'/' {
        return Err(FsError::OutsideExport("an absolute path".into()));
    }
    for c in p.split(|b| *b == b'/') {
        match c {
            b".." => return Err(FsError::OutsideExport("a `..` component".into())),
            b"" | b"." => {
                return Err(FsError::BadName(format!(
                    "{:?}: not a canonical path (an empty or `.` component)",
                    String::from_utf8_lossy(&p[..p.len().min(64)])
                )))
            }
            _ => component(c)?,
        }
    }
    Ok(())
}

/// One component: no NUL, at most NAME_MAX bytes.
fn component(c: &[u8]) -> Result<(), FsError> {
    if c.len() > NAME_MAX {
        return Err(too_long("name", c.len(), NAME_MAX));
    }
    if c.contains(&0) {
        // As export.rs has always answered it.
        return Err(FsError::OutsideExport("a NUL byte".into()));
    }
    Ok(())
}

/// `parent` a path and `name` one new component in it.
fn entry(parent: &[u8], name: &[u8]) -> Result<(), FsError> {
    path(parent)?;
    match name {
        b"" | b"." | b".." => Err(FsError::BadName(format!(
            "{:?} is not a name one can make or remove",
            String::from_utf8_lossy(name)
        ))),
        n if n.contains(&b'/') => Err(FsError::BadName("a `/` in a name".into())),
        n => component(n),
    }?;
    if parent.len() + 1 + name.len() > MAX_PATH {
        return Err(too_long("path", parent.len() + 1 + name.len(), MAX_PATH));
    }
    Ok(())
}

fn xattr_name(name: &[u8]) -> Result<(), FsError> {
    match name.len() {
        0 => Err(FsError::Sys(nix::errno::Errno::EINVAL)),
        n if n > XATTR_NAME_MAX => Err(FsError::Sys(nix::errno::Errno::ERANGE)),
        _ if name.contains(&0) => Err(FsError::Sys(nix::errno::Errno::EINVAL)),
        _ => Ok(()),
    }
}

/// A Lock request's fields against the protocol: a known op, kind and type, a range whose
/// start is not past its end.
fn lock(r: &proto::LockRequest) -> Result<(), FsError> {
    let bad = |what: String| Err(FsError::BadRequest(format!("Lock: {what}")));
    if r.op > 3 {
        return bad(format!("unknown op {}", r.op));
    }
    if r.kind > 1 {
        return bad(format!("unknown kind {}", r.kind));
    }
    if r.r#type > protocol::lock_ranges::F_UNLCK {
        return bad(format!("unknown type {}", r.r#type));
    }
    // A flock is on the whole file: its range fields are not read.
    if r.kind == 0 && (r.start > r.end || r.start > protocol::lock_ranges::END) {
        return Err(FsError::Sys(nix::errno::Errno::EINVAL));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::StreamId;

    fn frame(cmd: Command, msg: &impl Message) -> Frame {
        Frame::request(cmd, StreamId(1), msg, Bytes::new())
    }

    fn lookup(path: &[u8]) -> Result<Request, FsError> {
        let msg = proto::LookupRequest {
            path: Bytes::copy_from_slice(path),
        };
        Request::decode(&frame(Command::Lookup, &msg))
    }

    #[test]
    fn prefix_hashes_mark_each_component_boundary() {
        use std::collections::hash_map::DefaultHasher;
        let ends: Vec<usize> = prefix_hashes(DefaultHasher::new(), b"a/bc/d")
            .iter()
            .map(|(e, _)| *e)
            .collect();
        assert_eq!(ends, vec![0, 1, 4, 6]);
        let alone = prefix_hashes(DefaultHasher::new(), b"a/bc");
        let within = prefix_hashes(DefaultHasher::new(), b"a/bc/d");
        assert_eq!(
            alone.last(),
            within.get(2),
            "a path hashes alike alone and as a prefix"
        );
        assert_eq!(prefix_hashes(DefaultHasher::new(), b"").len(), 1);
    }

    #[test]
    fn every_other_spelling_of_a_path_is_refused() {
        for ok in [&b""[..], b"d", b"d/x", b"a/.b/c", b"..."] {
            assert!(lookup(ok).is_ok(), "{ok:?}");
        }
        for (bad, errno) in [
            (&b"./d/x"[..], libc::EINVAL),
            (b"d//x", libc::EINVAL),
            (b"a/./b", libc::EINVAL),
            (b"d/", libc::EINVAL),
            (b"d/x\0", libc::EXDEV),
            (b"/etc", libc::EXDEV),
            (b"d/../x", libc::EXDEV),
        ] {
            let e = lookup(bad).expect_err(&String::from_utf8_lossy(bad));
            assert_eq!(e.errno(), errno, "{bad:?}");
        }
    }

    #[test]
    fn names_and_paths_are_bounded() {
        let long_name = vec![b'x'; NAME_MAX + 1];
        assert_eq!(lookup(&long_name).unwrap_err().errno(), libc::ENAMETOOLONG);
        assert!(lookup(&long_name[..NAME_MAX]).is_ok());
        let deep: Vec<u8> = b"a/".repeat(MAX_PATH / 2 + 1);
        assert_eq!(
            lookup(&deep[..deep.len() - 1]).unwrap_err().errno(),
            libc::ENAMETOOLONG
        );
        let huge = b"a/".repeat(512 * 1024);
        let started = std::time::Instant::now();
        assert_eq!(
            lookup(&huge[..huge.len() - 1]).unwrap_err().errno(),
            libc::ENAMETOOLONG
        );
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        let create = proto::CreateRequest {
            parent: Bytes::from_static(b"d"),
            name: Bytes::from(vec![b'y'; NAME_MAX + 1]),
            ..Default::default()
        };
        let e = Request::decode(&frame(Command::Create, &create)).unwrap_err();
        assert_eq!(e.errno(), libc::ENAMETOOLONG);
        for name in [&b""[..], b".", b"..", b"a/b"] {
            let create = proto::CreateRequest {
                parent: Bytes::from_static(b"d"),
                name: Bytes::copy_from_slice(name),
                ..Default::default()
            };
            let e = Request::decode(&frame(Command::Create, &create)).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "{name:?}");
        }
    }

    #[test]
    fn a_request_says_its_paths_handle_and_lease_once_decoded() {
        let rename = proto::RenameRequest {
            parent: Bytes::from_static(b"d"),
            name: Bytes::from_static(b"a"),
            new_parent: Bytes::new(),
            new_name: Bytes::from_static(b"b"),
            flags: 0,
        };
        let r = Request::decode(&frame(Command::Rename, &rename)).unwrap();
        assert_eq!(
            r.paths(),
            vec![Bytes::from_static(b"d/a"), Bytes::from_static(b"b")]
        );
        assert_eq!(
            r.renamed(),
            Some(Renamed {
                from: Bytes::from_static(b"d/a"),
                to: Bytes::from_static(b"b"),
                exchange: false
            })
        );
        assert_eq!(r.subtrees(), r.paths());
        let swap = proto::RenameRequest {
            flags: libc::RENAME_EXCHANGE,
            ..rename.clone()
        };
        let r = Request::decode(&frame(Command::Rename, &swap)).unwrap();
        assert!(r.renamed().is_some_and(|r| r.exchange));
        let list = proto::ListRequest {
            path: Bytes::from_static(b"d"),
            want_lease: true,
            ..Default::default()
        };
        let r = Request::decode(&frame(Command::List, &list)).unwrap();
        assert_eq!(r.wanted_lease(), Some(Bytes::from_static(b"d")));
        let write = proto::WriteRequest {
            handle: 7,
            ..Default::default()
        };
        let f = Frame::request(
            Command::Write,
            StreamId(3),
            &write,
            Bytes::from_static(b"xy"),
        );
        let r = Request::decode(&f).unwrap();
        assert_eq!(r.on_handle(), Some((Command::Write, 7)));
        assert_eq!(r.space_needed(), Some(((2, 0), false)));
        let stray = Frame::request(
            Command::Lookup,
            StreamId(3),
            &proto::LookupRequest::default(),
            Bytes::from_static(b"x"),
        );
        assert!(
            Request::decode(&stray).is_err(),
            "a data section Lookup does not carry"
        );
    }
}
