//! Change notification between clients: every successful change a client makes is
//! published to the other connections on the same export directory that asked for
//! notifications at the handshake, which forward it as a `Notify` frame (stream 0), so their
//! mounts drop what they cached of it at once instead of after their timeouts.
//!
//! What a request changed is worked out from the request itself (`of_request`): names in a
//! directory (create, mkdir, mknod, symlink, link, remove, rename), an object by path
//! (setattr, xattrs, link) or, for handles, by identity (a setattr, write, fallocate or
//! copy_range through a handle, told before its reply: a writer's close, which waits for
//! its writes, returns after others were told). One broadcast channel per export
//! directory, bounded: a connection that falls behind gets "everything changed" instead.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use protocol::{Command, Frame};

use crate::request::{Body, Request};
use tokio::sync::broadcast;

/// The origin of what no connection made (changes on the server's disk): every
/// connection is told.
pub const NO_CONNECTION: u64 = u64::MAX;

/// Changes kept for a connection that has not forwarded them yet.
const BACKLOG: usize = 4096;

/// One published batch: which connection made it (not told of its own) and what changed.
#[derive(Clone, Debug)]
pub struct Published {
    pub origin: u64,
    pub changes: Arc<Vec<proto::Change>>,
}

/// The channels, by export directory.
#[derive(Default, Debug)]
pub struct Hub {
    channels: parking_lot::Mutex<HashMap<PathBuf, broadcast::Sender<Published>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Hub {
    /// A connection id, unique for the server's life.
    pub fn connection_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn channel(&self, dir: &std::path::Path) -> broadcast::Sender<Published> {
        let mut channels = self.channels.lock();
        channels.retain(|_, tx| tx.receiver_count() > 0);
        channels
            .entry(dir.to_path_buf())
            .or_insert_with(|| broadcast::channel(BACKLOG).0)
            .clone()
    }

    /// Receives what other connections change under export directory `dir`.
    pub fn subscribe(&self, dir: &std::path::Path) -> broadcast::Receiver<Published> {
        self.channel(dir).subscribe()
    }

    /// The channel of `dir` if anyone but the caller listens on it (`subscribed`: the
    /// caller itself does, so it takes another listener to bother).
    fn others(
        &self,
        dir: &std::path::Path,
        subscribed: bool,
    ) -> Option<broadcast::Sender<Published>> {
        let channels = self.channels.lock();
        let tx = channels.get(dir)?;
        (tx.receiver_count() > subscribed as usize).then(|| tx.clone())
    }

    /// True if telling of a change under `dir` would reach anyone: work out what a request
    /// changed (decoding, a `fstat` for a handle) only then.
    pub fn listened(&self, dir: &std::path::Path, subscribed: bool) -> bool {
        self.others(dir, subscribed).is_some()
    }

    /// Tells the connections under `dir` that connection `origin` made `changes`;
    /// `subscribed`: `origin` itself listens.
    pub fn publish(
        &self,
        dir: &std::path::Path,
        origin: u64,
        subscribed: bool,
        changes: Vec<proto::Change>,
    ) {
        if changes.is_empty() {
            return;
        }
        if let Some(tx) = self.others(dir, subscribed) {
            let _ = tx.send(Published {
                origin,
                changes: Arc::new(changes),
            });
        }
    }
}

/// The Notify frame carrying `changes`.
pub fn frame(changes: &[proto::Change]) -> Frame {
    notify_frame(proto::Notify {
        changes: changes.to_vec(),
        recall: Vec::new(),
    })
}

/// The Notify frame asking for the leases on `paths` back.
pub fn recall_frame(paths: Vec<bytes::Bytes>) -> Frame {
    notify_frame(proto::Notify {
        changes: Vec::new(),
        recall: paths,
    })
}

fn notify_frame(msg: proto::Notify) -> Frame {
    Frame::response(
        Command::Notify.code(),
        protocol::StreamId::CONTROL,
        &msg,
        bytes::Bytes::new(),
    )
}

/// The Notify frame for a connection that fell behind: drop everything.
pub fn everything() -> Frame {
    frame(&[proto::Change {
        everything: true,
        ..Default::default()
    }])
}

/// Copies, not slices of the request: a change waiting in the broadcast for a slow
/// listener must not keep the whole request frame (up to 1 MiB) alive.
fn entry(dir: &bytes::Bytes, name: &bytes::Bytes) -> proto::Change {
    proto::Change {
        dir: bytes::Bytes::copy_from_slice(dir),
        name: bytes::Bytes::copy_from_slice(name),
        ..Default::default()
    }
}

fn object(path: &bytes::Bytes) -> proto::Change {
    proto::Change {
        path: bytes::Bytes::copy_from_slice(path),
        ..Default::default()
    }
}

/// What request `frame` changed by path, once it succeeded (changes through a handle are
/// worked out by the caller, which holds the handle).
pub fn of_request(request: &Request) -> Vec<proto::Change> {
    match &request.body {
        Body::Create(r) => vec![entry(&r.parent, &r.name)],
        Body::Mkdir(r) => vec![entry(&r.parent, &r.name)],
        Body::Mknod(r) => vec![entry(&r.parent, &r.name)],
        Body::Symlink(r) => vec![entry(&r.parent, &r.name)],
        Body::Remove(r) => vec![entry(&r.parent, &r.name)],
        Body::Rename(r) => vec![entry(&r.parent, &r.name), entry(&r.new_parent, &r.new_name)],
        Body::Link(r) => vec![entry(&r.new_parent, &r.new_name), object(&r.path)],
        Body::SetAttr(r) => (!r.has_handle)
            .then(|| object(&r.path))
            .into_iter()
            .collect(),
        Body::SetXattr(r) => vec![object(&r.path)],
        Body::RemoveXattr(r) => vec![object(&r.path)],
        _ => Vec::new(),
    }
}

/// The handle through which a request (as `Request::on_handle` says) changes its
/// file: a setattr, a write, fallocate or copy_range. Told at once, before the reply: a
/// writer's close (which waits for its writes) returns after the others were told, so
/// close-to-open holds for them without waiting for the handle's Close.
pub fn handle_change(on: Option<(Command, u64)>) -> Option<u64> {
    let (cmd, handle) = on?;
    match cmd {
        Command::Write | Command::Fallocate | Command::CopyRange | Command::SetAttr => Some(handle),
        _ => None,
    }
}

/// The change of the object open as `file`, by identity.
pub fn of_file(file: &std::fs::File) -> Option<proto::Change> {
    use std::os::fd::AsFd;
    let st = nix::sys::stat::fstat(file).ok()?;
    let attr = crate::attr::of(file.as_fd(), &st);
    Some(proto::Change {
        object: Some(proto::Identity {
            dev: attr.dev,
            ino: attr.ino,
            generation: attr.generation,
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use prost::Message;
    use protocol::StreamId;

    fn request(cmd: Command, msg: &impl Message) -> Request {
        Request::decode(&Frame::request(cmd, StreamId(1), msg, Bytes::new())).unwrap()
    }

    #[test]
    fn each_change_is_told_as_names_paths_or_handles() {
        let rename = proto::RenameRequest {
            parent: Bytes::from_static(b"a"),
            name: Bytes::from_static(b"x"),
            new_parent: Bytes::from_static(b"b"),
            new_name: Bytes::from_static(b"y"),
            flags: 0,
        };
        let told = of_request(&request(Command::Rename, &rename));
        let names: Vec<_> = told.iter().map(|c| (&c.dir[..], &c.name[..])).collect();
        assert_eq!(names, vec![(&b"a"[..], &b"x"[..]), (&b"b"[..], &b"y"[..])]);
        let by_handle = proto::SetAttrRequest {
            handle: 4,
            has_handle: true,
            ..Default::default()
        };
        assert!(of_request(&request(Command::SetAttr, &by_handle)).is_empty());
        assert_eq!(
            handle_change(request(Command::SetAttr, &by_handle).on_handle()),
            Some(4)
        );
        let write = proto::WriteRequest {
            handle: 4,
            offset: 0,
            budgeted: false,
            verifier: 0,
        };
        assert_eq!(
            handle_change(request(Command::Write, &write).on_handle()),
            Some(4)
        );
        let close = proto::CloseRequest { handle: 4 };
        assert_eq!(
            handle_change(request(Command::Close, &close).on_handle()),
            None
        );
        let read = proto::LookupRequest {
            path: Bytes::from_static(b"a"),
        };
        assert!(of_request(&request(Command::Lookup, &read)).is_empty());
    }

    #[tokio::test]
    async fn others_hear_of_a_change_and_its_maker_does_not() {
        let hub = Hub::default();
        let dir = std::path::Path::new("/export");
        let (me, other) = (hub.connection_id(), hub.connection_id());
        let mut mine = hub.subscribe(dir);
        let mut theirs = hub.subscribe(dir);
        let mut elsewhere = hub.subscribe(std::path::Path::new("/other"));
        hub.publish(dir, me, true, vec![object(&Bytes::from_static(b"f"))]);
        let got = theirs.recv().await.unwrap();
        assert_ne!(got.origin, other);
        assert_eq!(got.origin, me, "the maker filters its own out by this");
        assert_eq!(mine.recv().await.unwrap().origin, me);
        assert!(
            elsewhere.try_recv().is_err(),
            "another export hears nothing"
        );
        drop((theirs, elsewhere));
        hub.publish(dir, me, true, vec![object(&Bytes::from_static(b"g"))]);
        assert!(mine.try_recv().is_err(), "alone: nothing is sent");
    }
}
