//! Xen errno values (`xen/include/public/errno.h`). Hypercalls return the negated value.

/// A Xen error number (positive; hypercalls return `-errno`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident = $val:expr),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "` (", stringify!($val), ").")]
                pub const $name: Errno = Errno($val);
            )*

            /// The symbolic name (`"EINVAL"`), or `None` for a number Xen does not define.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, EIO = 5, ENXIO = 6, E2BIG = 7,
    ENOEXEC = 8, EBADF = 9, ECHILD = 10, EAGAIN = 11, ENOMEM = 12, EACCES = 13,
    EFAULT = 14, EBUSY = 16, EEXIST = 17, EXDEV = 18, ENODEV = 19, ENOTDIR = 20,
    EISDIR = 21, EINVAL = 22, ENFILE = 23, EMFILE = 24, ENOSPC = 28, EROFS = 30,
    EMLINK = 31, EDOM = 33, ERANGE = 34, EDEADLK = 35, ENAMETOOLONG = 36, ENOLCK = 37,
    ENOSYS = 38, ENOTEMPTY = 39, ENODATA = 61, ETIME = 62, EBADMSG = 74,
    EOVERFLOW = 75, EILSEQ = 84, ERESTART = 85, ENOTSOCK = 88, EMSGSIZE = 90,
    EOPNOTSUPP = 95, EADDRINUSE = 98, EADDRNOTAVAIL = 99, ENOBUFS = 105, EISCONN = 106,
    ENOTCONN = 107, ETIMEDOUT = 110, ECONNREFUSED = 111,
}

impl Errno {
    /// The value a hypercall returns in `rax` for this error.
    pub const fn to_ret(self) -> i64 {
        -(self.0 as i64)
    }

    /// Interprets a hypercall return value: negative values in Xen's errno range are errors.
    pub const fn check(ret: i64) -> Result<u64, Errno> {
        if ret < 0 && ret >= -4095 {
            Err(Errno(-ret as i32))
        } else {
            Ok(ret as u64)
        }
    }
}

impl core::fmt::Display for Errno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "errno {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_round_trip() {
        assert_eq!(Errno::ENOSYS.to_ret(), -38);
        assert_eq!(Errno::check(-38), Err(Errno::ENOSYS));
        assert_eq!(Errno::check(0), Ok(0));
        assert_eq!(Errno::check(0x4_0011), Ok(0x4_0011));
        assert_eq!(Errno::EFAULT.name(), Some("EFAULT"));
        assert_eq!(Errno(15).name(), None);
    }
}
