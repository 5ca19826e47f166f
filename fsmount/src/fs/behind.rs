//! What follows the reply to a request sent behind (an operation answered locally, see
//! `names::local_ops`): run without a task of its own on the runtime. Its first poll is on
//! the sending thread; the reply's arrival wakes it on the connection's reader, which runs
//! it there (`protocol::first_poll`). Spawning it instead woke a runtime thread for every
//! operation answered locally, a large share of their cost.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use protocol::Frame;

use crate::remote::{CallFuture, ClientError};

/// Runs `then` with the outcome of `call` once it is known, never on this thread: callers
/// hold locks `then` takes (the names).
pub(in crate::fs) fn after_reply(
    call: CallFuture,
    then: impl FnOnce(Result<Frame, ClientError>) + Send + 'static,
) {
    let task = async move { then(NotOnFirstPoll::new(call).await) };
    protocol::first_poll::run(&tokio::runtime::Handle::current(), task);
}

/// `inner`, which on its first poll never finishes: a result ready then is kept and the
/// task woken, so it is handed to the runtime and finished elsewhere.
struct NotOnFirstPoll {
    inner: CallFuture,
    polled: bool,
    ready: Option<Result<Frame, ClientError>>,
}

impl NotOnFirstPoll {
    fn new(inner: CallFuture) -> Self {
        NotOnFirstPoll {
            inner,
            polled: false,
            ready: None,
        }
    }
}

impl Future for NotOnFirstPoll {
    type Output = Result<Frame, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.ready.take() {
            return Poll::Ready(r);
        }
        let polled = self.inner.as_mut().poll(cx);
        if std::mem::replace(&mut self.polled, true) {
            return polled;
        }
        if let Poll::Ready(r) = polled {
            self.ready = Some(r);
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_reply_ready_at_once_is_handled_on_another_thread() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let here = std::thread::current().id();
        let (tx, rx) = std::sync::mpsc::channel();
        let _in_rt = rt.enter();
        let ready: CallFuture = Box::pin(async { Err(ClientError::Timeout("now".into())) });
        after_reply(ready, move |r| {
            tx.send((std::thread::current().id(), r.is_err())).unwrap();
        });
        let (thread, failed) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the follow-up never ran");
        assert!(failed);
        assert_ne!(thread, here, "ran on the sending thread");
    }

    #[test]
    fn a_later_reply_runs_the_follow_up_once() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let _in_rt = rt.enter();
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel::<()>();
        let ran = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let call: CallFuture = Box::pin(async move {
            reply_rx.await.ok();
            Err(ClientError::Timeout("later".into()))
        });
        let r = ran.clone();
        after_reply(call, move |_| {
            assert!(!r.swap(true, Ordering::SeqCst), "ran twice");
            done_tx.send(()).unwrap();
        });
        assert!(!ran.load(Ordering::SeqCst), "ran before its reply");
        reply_tx.send(()).unwrap();
        done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the follow-up never ran");
    }
}
