//! A CONNECT's admission in its order (spec/06-node.md §4.4.4), written once for every
//! driver of the core: the daemon's rendezvous task (`daemon/rendezvous.rs`) and the
//! simulators (`netsim`) run this same function over their own access to a [`Core`](super::Core).
//!
//! 1. the delivering connection's source pays a token ([`Input::ConnectFrom`]) — before
//!    anything costs a signature check;
//! 2. the offer's signature is checked here, in the caller's task, never in the core's;
//! 3. freshness, the replay cache and the caller's bucket ([`Input::ConnectOffer`]);
//! 4. an offer for us is ours to answer; one to forward needs the callee's registration
//!    ([`Query::Registration`]) over a connection still open — a closed one is dropped
//!    ([`Input::Unregister`]).
//!
//! It performs no I/O: every step is an input or a query to the core, through
//! [`CoreAccess`], which a driver implements with its queue (asynchronous) and a
//! simulator with direct calls (ready at once).

use std::future::Future;
use std::net::IpAddr;

use crate::nat::signal::{ConnectErrorCode, Signal};
use crate::node::rendezvous::ConnectRefusal;

use super::{Answer, Input, Query, Reply};

/// How a driver reaches the core for [`admit_connect`]. `None`: the core is gone.
pub trait CoreAccess<C, R> {
    /// Feeds an input and returns its reply.
    fn ask(&mut self, input: Input<C, R>) -> impl Future<Output = Option<Reply>> + Send;
    /// Asks a read-only question.
    fn query(&mut self, q: Query) -> impl Future<Output = Option<Answer<C, R>>> + Send;
}

/// Where an admitted CONNECT goes.
#[derive(Debug)]
pub enum Admitted<R> {
    /// The offer is for us: answer it.
    ForUs(Signal),
    /// Forward it to the callee, registered over `to`.
    Forward {
        /// The verified offer.
        offer: Signal,
        /// The callee's registration's connection.
        to: R,
    },
}

/// Why a CONNECT was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// A limit of the rendezvous role refused it.
    #[error("{0}")]
    Refused(ConnectRefusal),
    /// The offer did not decode or its signature did not verify.
    #[error("malformed or unsigned offer")]
    Malformed,
    /// The callee is not registered here (or its connection closed).
    #[error("callee not registered")]
    NotRegistered,
    /// The core is gone (the node is stopping).
    #[error("node stopping")]
    Busy,
}

impl ConnectError {
    /// The CONNECT_ERROR code on the wire.
    pub fn code(self) -> ConnectErrorCode {
        match self {
            ConnectError::Refused(r) => r.code(),
            ConnectError::Malformed => ConnectErrorCode::Malformed,
            ConnectError::NotRegistered => ConnectErrorCode::NotRegistered,
            ConnectError::Busy => ConnectErrorCode::Busy,
        }
    }

    /// Whether the offer's signature was checked before the refusal (the source's bucket
    /// refuses before it).
    pub fn verified(self) -> bool {
        !matches!(
            self,
            ConnectError::Refused(ConnectRefusal::SourceRateLimited) | ConnectError::Busy
        )
    }
}

/// Admits the CONNECT `bytes` that arrived on a connection from `ip`: `answering` when the
/// offer names us as recipient, else it is to forward. `unix_ms` is the wall clock (the
/// offer's freshness); `open` says whether a registration's connection is still open.
pub async fn admit_connect<C, R, A: CoreAccess<C, R>>(
    core: &mut A,
    answering: bool,
    ip: IpAddr,
    bytes: &[u8],
    unix_ms: u64,
    open: impl Fn(&R) -> bool,
) -> Result<Admitted<R>, ConnectError> {
    let admitted = |r: Option<Reply>| match r {
        Some(Reply::Admission(Ok(()))) => Ok(()),
        Some(Reply::Admission(Err(e))) => Err(ConnectError::Refused(e)),
        _ => Err(ConnectError::Busy),
    };
    admitted(core.ask(Input::ConnectFrom { answering, ip }).await)?;
    let offer = Signal::verify(bytes).map_err(|_| ConnectError::Malformed)?;
    let check = Input::ConnectOffer {
        answering,
        offer: Box::new(offer.clone()),
        unix_ms,
    };
    admitted(core.ask(check).await)?;
    if answering {
        return Ok(Admitted::ForUs(offer));
    }
    let peer = offer.to.node_id();
    match core.query(Query::Registration(peer)).await {
        Some(Answer::Registration(Some(to))) if open(&to) => Ok(Admitted::Forward { offer, to }),
        Some(Answer::Registration(Some(closed))) => {
            core.ask(Input::Unregister { peer, conn: closed }).await;
            Err(ConnectError::NotRegistered)
        }
        Some(_) => Err(ConnectError::NotRegistered),
        None => Err(ConnectError::Busy),
    }
}

/// A simulator's access: the core itself at one instant. Every step is ready at once, so
/// [`run_ready`] drives [`admit_connect`] without an executor.
pub struct Now<'a, C, R> {
    /// The core.
    pub core: &'a mut super::Core<C, R>,
    /// The simulated time.
    pub now: std::time::Instant,
}

impl<C: Clone + Send, R: Clone + PartialEq + Send> CoreAccess<C, R> for Now<'_, C, R> {
    fn ask(&mut self, input: Input<C, R>) -> impl Future<Output = Option<Reply>> + Send {
        std::future::ready(Some(self.core.handle(self.now, input)))
    }

    fn query(&mut self, q: Query) -> impl Future<Output = Option<Answer<C, R>>> + Send {
        std::future::ready(Some(self.core.query(self.now, q)))
    }
}

/// Runs a future whose every step is ready at once (such as [`admit_connect`] over a
/// [`Now`]); `None` if it would wait.
pub fn run_ready<T>(fut: impl Future<Output = T>) -> Option<T> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(t) => Some(t),
        std::task::Poll::Pending => None,
    }
}
