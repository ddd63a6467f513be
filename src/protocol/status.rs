//! Response status codes.

/// A response status. Unknown values are representable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Status(pub u16);

macro_rules! statuses {
    ($($name:ident = $value:expr),* $(,)?) => {
        impl Status {
            $(pub const $name: Status = Status($value);)*

            pub fn name(self) -> String {
                match self.0 {
                    $($value => stringify!($name).to_string(),)*
                    other => format!("0x{other:04x}"),
                }
            }

            /// Every status this implementation answers with.
            pub const ALL: &'static [Status] = &[$(Status($value)),*];
        }
    };
}

statuses! {
    SUCCESS = 0x0000,
    KEY_ENOENT = 0x0001,
    KEY_EEXISTS = 0x0002,
    E2BIG = 0x0003,
    EINVAL = 0x0004,
    NOT_STORED = 0x0005,
    DELTA_BADVAL = 0x0006,
    NOT_MY_VBUCKET = 0x0007,
    ERANGE = 0x0022,
    ROLLBACK = 0x0023,
    UNKNOWN_COMMAND = 0x0081,
    ENOMEM = 0x0082,
    NOT_SUPPORTED = 0x0083,
    EINTERNAL = 0x0084,
    EBUSY = 0x0085,
    ETMPFAIL = 0x0086,
    DURABILITY_INVALID_LEVEL = 0x00a0,
    DURABILITY_IMPOSSIBLE = 0x00a1,
    SYNC_WRITE_IN_PROGRESS = 0x00a2,
    SYNC_WRITE_AMBIGUOUS = 0x00a3,
}

impl Status {
    pub fn is_success(self) -> bool {
        self == Status::SUCCESS
    }
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}
