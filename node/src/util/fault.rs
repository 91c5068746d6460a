//! Test-only fault injection (`testing.fault_injection`): the error an actor fails with when
//! told to, so supervision can be exercised on a running node.

/// The error an actor fails with when a fault is injected.
#[derive(Debug, thiserror::Error)]
#[error("injected fault in the {0} actor")]
pub struct InjectedFault(pub &'static str);

/// Makes a named actor fail: the supervisor provides it, the HTTP layer's test-only endpoint
/// uses it (so the HTTP layer needs no handle on the supervisor).
pub trait FaultInjector: Send + Sync {
    /// The actors a fault can be injected into, in start order.
    fn actors(&self) -> Vec<&'static str>;
    /// Makes `actor` fail; answers its name.
    fn inject(&self, actor: &str) -> Result<&'static str, InjectError>;
}

/// Why a fault was not injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// No actor has that name.
    #[error("no such actor")]
    UnknownActor,
    /// The supervisor is not taking messages (shutting down).
    #[error("the supervisor is not accepting messages")]
    Stopped,
}
