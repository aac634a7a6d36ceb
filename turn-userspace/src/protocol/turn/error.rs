//! Request failures and the STUN error codes they are answered with (RFC 8489 §14.8,
//! RFC 8656 §19).

/// Why a request was refused. The `Display` text is the reason phrase sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    /// RFC 8489 §10: go to this ALTERNATE-SERVER (a draining relay's answer to Allocate).
    #[error("Try Alternate")]
    TryAlternate(std::net::SocketAddr),
    #[error("Bad Request")]
    BadRequest,
    #[error("Unauthenticated")]
    Unauthenticated,
    #[error("Forbidden")]
    Forbidden,
    #[error("Unknown Attribute")]
    UnknownAttribute,
    #[error("Allocation Mismatch")]
    AllocationMismatch,
    #[error("Stale Nonce")]
    StaleNonce,
    #[error("Address Family not Supported")]
    AddressFamilyNotSupported,
    #[error("Wrong Credentials")]
    WrongCredentials,
    #[error("Unsupported Transport Protocol")]
    UnsupportedTransportProtocol,
    #[error("Peer Address Family Mismatch")]
    PeerAddressFamilyMismatch,
    #[error("Allocation Quota Reached")]
    AllocationQuotaReached,
    #[error("Insufficient Capacity")]
    InsufficientCapacity,
}

impl TurnError {
    /// The ERROR-CODE number.
    pub fn code(self) -> u16 {
        match self {
            TurnError::TryAlternate(_) => 300,
            TurnError::BadRequest => 400,
            TurnError::Unauthenticated => 401,
            TurnError::Forbidden => 403,
            TurnError::UnknownAttribute => 420,
            TurnError::AllocationMismatch => 437,
            TurnError::StaleNonce => 438,
            TurnError::AddressFamilyNotSupported => 440,
            TurnError::WrongCredentials => 441,
            TurnError::UnsupportedTransportProtocol => 442,
            TurnError::PeerAddressFamilyMismatch => 443,
            TurnError::AllocationQuotaReached => 486,
            TurnError::InsufficientCapacity => 508,
        }
    }
}

/// A malformed attribute is a bad request, except an unknown address family (RFC 8656
/// §7.2: 440).
impl From<crate::protocol::stun::AttributeError> for TurnError {
    fn from(error: crate::protocol::stun::AttributeError) -> Self {
        match error {
            crate::protocol::stun::AttributeError::UnknownAddressFamily(_) => {
                TurnError::AddressFamilyNotSupported
            }
            _ => TurnError::BadRequest,
        }
    }
}
