//! systemd's readiness protocol (sd_notify), for fsserver and fsmount: when started by
//! systemd with `Type=notify`, `NOTIFY_SOCKET` names a datagram socket to which the service
//! reports `READY=1` once it serves (fsserver listens, fsmount is mounted), `RELOADING=1`
//! (with the monotonic time) while a reload runs, and `STOPPING=1`. Without `NOTIFY_SOCKET`
//! every call does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. "READY=1") to systemd, if it is listening. Failures are logged only:
/// readiness is a courtesy, never a reason to stop serving.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            None => socket.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd ({state}): {e}");
    }
}

/// `RELOADING=1` with the monotonic timestamp systemd asks for (`Type=notify-reload`).
pub fn reloading() {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
}
