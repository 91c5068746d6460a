//! Test-only fault injection (`testing.fault_injection`): the error an actor fails with when
//! told to, so supervision can be exercised on a running node.

/// The error an actor fails with when a fault is injected.
#[derive(Debug, thiserror::Error)]
#[error("injected fault in the {0} actor")]
pub struct InjectedFault(pub &'static str);
