//! Opcodes of the binary protocol, including DCP's.

/// A command opcode. Unknown values are representable: the server answers
/// them with `UNKNOWN_COMMAND`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Opcode(pub u8);

macro_rules! opcodes {
    ($($name:ident = $value:expr),* $(,)?) => {
        impl Opcode {
            $(pub const $name: Opcode = Opcode($value);)*

            /// The opcode's name, or `0xNN` when unknown.
            pub fn name(self) -> String {
                match self.0 {
                    $($value => stringify!($name).to_string(),)*
                    other => format!("0x{other:02x}"),
                }
            }

            /// Whether the opcode is known.
            pub fn is_known(self) -> bool {
                matches!(self.0, $($value)|*)
            }
        }
    };
}

opcodes! {
    GET = 0x00,
    SET = 0x01,
    ADD = 0x02,
    REPLACE = 0x03,
    DELETE = 0x04,
    INCREMENT = 0x05,
    DECREMENT = 0x06,
    QUIT = 0x07,
    FLUSH = 0x08,
    GETQ = 0x09,
    NOOP = 0x0a,
    VERSION = 0x0b,
    GETK = 0x0c,
    GETKQ = 0x0d,
    APPEND = 0x0e,
    PREPEND = 0x0f,
    STAT = 0x10,
    SETQ = 0x11,
    ADDQ = 0x12,
    REPLACEQ = 0x13,
    DELETEQ = 0x14,
    INCREMENTQ = 0x15,
    DECREMENTQ = 0x16,
    QUITQ = 0x17,
    FLUSHQ = 0x18,
    APPENDQ = 0x19,
    PREPENDQ = 0x1a,
    SET_VBUCKET_STATE = 0x3d,
    DCP_OPEN = 0x50,
    DCP_ADD_STREAM = 0x51,
    DCP_CLOSE_STREAM = 0x52,
    DCP_STREAM_REQ = 0x53,
    DCP_GET_FAILOVER_LOG = 0x54,
    DCP_STREAM_END = 0x55,
    DCP_SNAPSHOT_MARKER = 0x56,
    DCP_MUTATION = 0x57,
    DCP_DELETION = 0x58,
    DCP_EXPIRATION = 0x59,
    DCP_SET_VBUCKET_STATE = 0x5b,
    DCP_NOOP = 0x5c,
    DCP_BUFFER_ACKNOWLEDGEMENT = 0x5d,
    DCP_CONTROL = 0x5e,
    DCP_SYSTEM_EVENT = 0x5f,
    DCP_PREPARE = 0x60,
    DCP_SEQNO_ACKNOWLEDGED = 0x61,
    DCP_COMMIT = 0x62,
    DCP_ABORT = 0x63,
}

impl Opcode {
    /// Quiet variants answer only on failure (GETQ/GETKQ: only on a hit).
    pub fn is_quiet(self) -> bool {
        matches!(
            self,
            Opcode::GETQ
                | Opcode::GETKQ
                | Opcode::SETQ
                | Opcode::ADDQ
                | Opcode::REPLACEQ
                | Opcode::DELETEQ
                | Opcode::INCREMENTQ
                | Opcode::DECREMENTQ
                | Opcode::QUITQ
                | Opcode::FLUSHQ
                | Opcode::APPENDQ
                | Opcode::PREPENDQ
        )
    }

    /// The loud opcode a quiet one stands for (itself otherwise).
    pub fn loud(self) -> Opcode {
        match self {
            Opcode::GETQ => Opcode::GET,
            Opcode::GETKQ => Opcode::GETK,
            Opcode::SETQ => Opcode::SET,
            Opcode::ADDQ => Opcode::ADD,
            Opcode::REPLACEQ => Opcode::REPLACE,
            Opcode::DELETEQ => Opcode::DELETE,
            Opcode::INCREMENTQ => Opcode::INCREMENT,
            Opcode::DECREMENTQ => Opcode::DECREMENT,
            Opcode::QUITQ => Opcode::QUIT,
            Opcode::FLUSHQ => Opcode::FLUSH,
            Opcode::APPENDQ => Opcode::APPEND,
            Opcode::PREPENDQ => Opcode::PREPEND,
            other => other,
        }
    }

    /// DCP opcodes (0x50..=0x63).
    pub fn is_dcp(self) -> bool {
        (0x50..=0x63).contains(&self.0)
    }
}

impl std::fmt::Debug for Opcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::fmt::Display for Opcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}
