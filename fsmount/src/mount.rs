//! Mounting: connect, mount through fuser, report readiness, serve until unmounted.
//! SIGINT/SIGTERM unmount cleanly; `fusermount3 -u` or `umount` from outside end the
//! session the same way.

use std::path::PathBuf;
use std::sync::Arc;

use std::os::unix::ffi::OsStrExt;

use fuser::{Config, SessionACL};
use parking_lot::Mutex;

use crate::client;
use crate::client::transport::Transport;
use crate::daemon::Notifier;
use crate::defaults::MAX_IO;
use crate::fs::{Fs, FsOptions};
use crate::fuse::FuseAdapter;
use crate::kernel_mount::{self, KernelOptions};
use crate::options::{MountOptions, Source};

/// Everything a mount needs, already validated.
pub struct MountRequest {
    pub source: Source,
    pub source_text: String,
    pub mountpoint: PathBuf,
    pub token: Vec<u8>,
    /// Read again when the server refuses the token (it may have been rotated).
    pub token_file: PathBuf,
    pub options: MountOptions,
}

fn kernel_options(req: &MountRequest, read_only: bool) -> KernelOptions {
    let o = &req.options;
    KernelOptions {
        fsname: o.fsname.clone().unwrap_or_else(|| req.source_text.clone()),
        read_only,
        allow_other: o.allow_other || o.allow_root,
        default_permissions: o.default_permissions,
        flags: o.kernel_flags.clone(),
    }
}

/// Who may use the mount: the kernel lets everyone in with allow_other; fuser refuses
/// requests from others for allow_root (root and the owner) and for the default.
fn session_acl(o: &MountOptions) -> SessionACL {
    if o.allow_other {
        SessionACL::All
    } else if o.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    }
}

/// Lets the kernel send 1 MiB read-ahead requests: FUSE mounts start at 128 KiB.
fn raise_readahead(dev: Option<&str>) {
    let Some(dev) = dev else {
        return;
    };
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    if let Err(e) = std::fs::write(&path, (MAX_IO / 1024).to_string()) {
        tracing::debug!("cannot raise read-ahead through {path}: {e}");
    }
}

/// Runs the mount to its end. Reports readiness or the first error through `notifier`.
pub fn run(req: MountRequest, mut notifier: Notifier) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fsmount")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    // Registered before the kernel lists the mount: a signal as soon as it shows must
    // unmount, not kill the process with the default action.
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        let _in_runtime = rt.enter();
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    let transport = if req.options.plaintext {
        Ok(Transport::Plaintext)
    } else {
        let host = req
            .source
            .addr
            .rsplit_once(':')
            .map_or(req.source.addr.as_str(), |(h, _)| h);
        Transport::tls(host, &req.options.verify)
    };
    let connected = match transport {
        Ok(t) => rt.block_on(client::connect(
            &req.source.addr,
            &req.source.export,
            &req.token,
            t,
        )),
        Err(e) => Err(client::ClientError::Tls(e)),
    };
    let session = match connected {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            notifier.fail(&msg);
            return Err(msg);
        }
    };
    session.client.reread_token_from(req.token_file.clone());
    let read_only = req.options.read_only || session.read_only;
    let fs_options = FsOptions {
        attr_ttl: req.options.attr_timeout,
        entry_ttl: req.options.entry_timeout,
        negative_ttl: req.options.negative_timeout,
        cache_size: req.options.cache_size,
        readahead: req.options.readahead,
        dirty_limit: req.options.dirty_limit,
        leases: req.options.leases,
        open_ahead: req.options.open_ahead,
    };
    let max_io = session.max_data.min(MAX_IO);
    session.client.set_timeout(req.options.timeout);
    let client = session.client;
    let fs = Arc::new(Fs::new(
        Arc::new(client.clone()),
        &session.root,
        max_io,
        fs_options,
    ));
    fs.install_reopen();
    {
        let _rt = rt.enter();
        fs.install_lease_renewal();
    }
    let adapter = FuseAdapter::new(
        fs.clone(),
        rt.handle().clone(),
        req.options.default_permissions,
        req.options.intr_grace,
    )
    .threaded(req.options.fuse_threads > 1);
    let interrupts = adapter.interrupts();
    // Asked for explicitly: a metrics address that cannot be bound fails the mount.
    let metrics = match &req.options.metrics {
        Some(addr) => match rt.block_on(tokio::net::TcpListener::bind(addr)) {
            Ok(l) => Some(l),
            Err(e) => {
                let msg = format!("cannot serve metrics on {addr}: {e}");
                notifier.fail(&msg);
                return Err(msg);
            }
        },
        None => None,
    };
    // Started before the mount, so there is no moment where the mount stands unwatched.
    let kernel_options = kernel_options(&req, read_only);
    let mut watchdog = if req.options.auto_unmount {
        match crate::auto_unmount::start(&req.mountpoint, &kernel_options.fsname) {
            Ok(w) => Some(w),
            Err(e) => {
                let msg = format!("cannot start the auto_unmount watchdog: {e}");
                notifier.fail(&msg);
                return Err(msg);
            }
        }
    } else {
        None
    };
    let (fd, kernel) = match kernel_mount::mount(&req.mountpoint, &kernel_options) {
        Ok(m) => m,
        Err(e) => {
            let msg = format!("cannot mount on {}: {e}", req.mountpoint.display());
            notifier.fail(&msg);
            return Err(msg);
        }
    };
    let device = kernel_mount::mounted_device(&req.mountpoint);
    let kernel = Arc::new(Mutex::new(Some(kernel)));
    if let (Some(w), Some(dev)) = (watchdog.as_mut(), &device) {
        let via_fusermount = kernel.lock().as_ref().is_some_and(|k| k.via_fusermount());
        if let Err(e) = w.arm(dev, via_fusermount) {
            let msg = format!("cannot arm the auto_unmount watchdog: {e}");
            if let Some(k) = kernel.lock().take() {
                k.finish(device.as_deref());
            }
            notifier.fail(&msg);
            return Err(msg);
        }
    }
    let mut config = Config::default();
    config.n_threads = Some(req.options.fuse_threads);
    config.clone_fd = req.options.fuse_threads > 1;
    let fuse = match fuser::Session::from_fd(adapter, fd, session_acl(&req.options), config) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("FUSE handshake on {} failed: {e}", req.mountpoint.display());
            if let Some(k) = kernel.lock().take() {
                k.finish(device.as_deref());
            }
            notifier.fail(&msg);
            return Err(msg);
        }
    };
    raise_readahead(device.as_deref());
    tell_kernel_of_changes(&fs, &client, fuse.notifier());
    let metrics_addr = metrics
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string());
    let _control = {
        let _in_runtime = rt.enter();
        let (fs, client, interrupts) = (fs.clone(), client.clone(), interrupts.clone());
        crate::control::listen(fs, client, interrupts, &req.mountpoint, metrics_addr)
            .map_err(|e| tracing::warn!("no control socket (fsmount status/sync): {e}"))
            .ok()
    };
    if let Some(listener) = metrics {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("metrics on http://{addr}/metrics");
        }
        let (fs, client) = (fs.clone(), client.clone());
        rt.spawn(protocol::metrics::serve(listener, move || {
            crate::control::metrics_text(&fs, &client, &interrupts)
        }));
    }
    tracing::info!(source = %req.source_text, mountpoint = %req.mountpoint.display(), "mounted");

    let unmounter = kernel.clone();
    let mountpoint = req.mountpoint.clone();
    rt.spawn(async move {
        let (Ok(mut term), Ok(mut int)) = signals else {
            tracing::warn!("cannot handle SIGTERM/SIGINT; unmount with fusermount3 -u");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received: unmounting {}", mountpoint.display());
        if let Some(k) = unmounter.lock().as_mut() {
            if let Err(e) = k.unmount(false) {
                // Busy: detach now, as `umount -l`, so the session ends and the process exits.
                tracing::warn!("unmount failed ({e}); detaching lazily");
                let _ = k.unmount(true);
            }
        }
    });
    notifier.ready();
    let result = fuse.run().map_err(|e| format!("FUSE session failed: {e}"));
    if let Some(k) = kernel.lock().take() {
        k.finish(device.as_deref());
    }
    // Data accepted from applications is sent before the process ends (for up to the mount's
    // timeout; for ever with `hard`).
    let unsent = fs.writeback_stats().filter(|w| w.writes_in_flight > 0);
    if unsent.is_some() || fs.local_answers_in_flight() {
        tracing::warn!(
            "unmounted with {} bytes and {} changes not yet acknowledged; sending them",
            unsent.map_or(0, |w| w.dirty_bytes),
            fs.local_answers().0
        );
        let synced = match req.options.timeout {
            // The timer is made inside the runtime (block_on's future), not before it.
            Some(t) => rt
                .block_on(async { tokio::time::timeout(t, fs.sync_all()).await })
                .is_ok(),
            None => {
                let _ = rt.block_on(fs.sync_all());
                true
            }
        };
        if !synced {
            tracing::error!("server unreachable: unacknowledged writes are lost");
        }
    }
    // Leases go back now: another client need not wait for a recall nobody will answer.
    let _ = rt.block_on(async {
        let leaving = fs.give_back_before_leaving();
        tokio::time::timeout(std::time::Duration::from_secs(2), leaving).await
    });
    // An orderly end the server logs as one line, not as a connection lost.
    rt.block_on(client.close(std::time::Duration::from_secs(1)));
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Other clients' changes (the server's Notify frames) drop this mount's caches at once, and
/// the kernel's on a thread of their own: an invalidation waits for the kernel's locks on
/// the inode, which a FUSE request in progress may hold.
fn tell_kernel_of_changes(fs: &Arc<Fs>, client: &crate::client::Client, kernel: fuser::Notifier) {
    use crate::remote::Remote;
    use std::sync::atomic::Ordering;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<crate::fs::Invalidate>>();
    let backlog = fs.kernel_backlog();
    let handled = backlog.clone();
    let spawned = std::thread::Builder::new()
        .name("fsmount-inval".into())
        .spawn(move || {
            for batch in rx {
                for inval in batch {
                    // ENOENT: the kernel had nothing cached; nothing to do.
                    let _ = match inval {
                        crate::fs::Invalidate::Entry(parent, name) => kernel.inval_entry(
                            fuser::INodeNo(parent.0),
                            std::ffi::OsStr::from_bytes(&name),
                        ),
                        crate::fs::Invalidate::Inode(ino) => {
                            kernel.inval_inode(fuser::INodeNo(ino.0), 0, 0)
                        }
                        // A negative offset: attributes only, the pages stay.
                        crate::fs::Invalidate::Attrs(ino) => {
                            kernel.inval_inode(fuser::INodeNo(ino.0), -1, 0)
                        }
                        crate::fs::Invalidate::Done(done) => {
                            done.0.notify_one();
                            Ok(())
                        }
                    };
                }
                handled.done.fetch_add(1, Ordering::Release);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(
            "no thread for change notifications ({e}): changes elsewhere show after the timeouts"
        );
        return;
    }
    // Counted queued before it is sent, so that `kernel_caught_up` never misses it.
    let queue = move |batch: Vec<crate::fs::Invalidate>| {
        backlog.queued.fetch_add(1, Ordering::Release);
        if tx.send(batch).is_err() {
            backlog.done.fetch_add(1, Ordering::Release);
        }
    };
    let queue = Arc::new(queue);
    let own = queue.clone();
    fs.set_kernel_invalidator(Box::new(move |batch| own(batch)));
    let fs = Arc::downgrade(fs);
    client.set_notify(Arc::new(move |n: proto::Notify| {
        if let Some(fs) = fs.upgrade() {
            if !n.recall.is_empty() {
                fs.recall(n.recall);
            }
            let changed = fs.changed(&n.changes);
            if !changed.is_empty() {
                queue(changed);
            }
        }
    }));
}
