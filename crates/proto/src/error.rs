//! Why a protocol refused bytes: always the sender's fault (a client's request or a
//! backend's answer), never the proxy's.

/// Why a framer refused the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A frame announces (or has grown to) more bytes than the configured maximum.
    #[error("frame of {len} bytes exceeds max_frame_size {max}")]
    TooLarge {
        /// Announced or buffered size.
        len: u64,
        /// Configured bound.
        max: u64,
    },
    /// A request announcing more bytes than the configured maximum, whose length is known
    /// and which the protocol lets a connection skip (memcached's storage commands): the
    /// caller may answer it and discard its `len` bytes instead of closing.
    #[error("frame of {len} bytes exceeds max_frame_size {max}")]
    Oversized {
        /// The frame's announced length, from its first byte.
        len: u64,
        /// Configured bound.
        max: u64,
    },
    /// The bytes cannot be a frame of this protocol.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A protocol script failed (error, time or memory limit, or a bad report): the
    /// script's fault, not the bytes'; the message names the script's file and line where
    /// known.
    #[error("{0}")]
    Script(String),
    /// A protocol script said the input is garbage (its verdict on the bytes).
    #[error("script rejected the input: {0}")]
    Rejected(String),
}

/// A validation failure: (dotted key, relative to the table being built; problem).
pub type Invalid = (String, String);
