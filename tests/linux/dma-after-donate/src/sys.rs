//! The few Linux system calls the program makes, issued directly with `svc #0` (no libc: the
//! target is bare metal as far as Rust knows). arm64 convention: number in `x8`, arguments in
//! `x0..x5`, result in `x0`, `-4095..=-1` meaning `-errno`; every other register is preserved.
//! Numbers are the generic ones of `include/uapi/asm-generic/unistd.h` that arm64 uses.

use core::arch::asm;
use core::ffi::CStr;
use core::fmt;

const SYS_IOCTL: u64 = 29;
const SYS_OPENAT: u64 = 56;
const SYS_CLOSE: u64 = 57;
const SYS_WRITE: u64 = 64;
const SYS_PREAD64: u64 = 67;
const SYS_PWRITE64: u64 = 68;
const SYS_EXIT_GROUP: u64 = 94;
const SYS_NANOSLEEP: u64 = 101;
const SYS_CLOCK_GETTIME: u64 = 113;
const SYS_MUNMAP: u64 = 215;
const SYS_MMAP: u64 = 222;

/// `openat`'s "relative to the current directory" (paths here are absolute anyway).
const AT_FDCWD: i64 = -100;
pub const O_RDWR: u64 = 0o2;
/// `O_SYNC` (arm64 value, `__O_SYNC | O_DSYNC`): `/dev/mem` maps the range uncached.
pub const O_SYNC: u64 = 0o4_010_000;
pub const O_CLOEXEC: u64 = 0o2_000_000;

pub const PROT_READ: u64 = 1;
pub const PROT_WRITE: u64 = 2;
pub const MAP_SHARED: u64 = 0x01;
pub const MAP_PRIVATE: u64 = 0x02;
pub const MAP_ANONYMOUS: u64 = 0x20;
/// Fault every page in now, so the buffer has its frames before VFIO pins them.
pub const MAP_POPULATE: u64 = 0x8000;

const CLOCK_MONOTONIC: u64 = 1;

/// A failed system call: the `errno` it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i64);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            5 => "EIO",
            9 => "EBADF",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            19 => "ENODEV",
            22 => "EINVAL",
            25 => "ENOTTY",
            _ => "",
        };
        if name.is_empty() { write!(f, "errno {}", self.0) } else { write!(f, "{name}") }
    }
}

pub type SysResult<T> = Result<T, Errno>;

fn check(ret: i64) -> SysResult<u64> {
    if (-4095..0).contains(&ret) { Err(Errno(-ret)) } else { Ok(ret as u64) }
}

/// # Safety
/// The call must be one whose pointer arguments are valid for what the kernel does with them.
unsafe fn syscall(nr: u64, args: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: `svc #0` enters the kernel, which reads x8 and x0..x5, writes x0 and preserves
    // every other register; what it does with the arguments is the caller's contract. The
    // default (memory-clobbering) asm options keep the compiler from caching memory the call
    // reads or writes.
    unsafe {
        asm!(
            "svc #0",
            in("x8") nr,
            inlateout("x0") args[0] => ret,
            in("x1") args[1],
            in("x2") args[2],
            in("x3") args[3],
            in("x4") args[4],
            in("x5") args[5],
            options(nostack),
        );
    }
    ret
}

/// An open file descriptor, closed when dropped.
#[derive(Debug)]
pub struct Fd(i32);

impl Fd {
    pub fn raw(&self) -> i32 {
        self.0
    }

    /// Takes ownership of a descriptor the kernel returned by other means (an ioctl).
    pub fn adopt(fd: i32) -> Self {
        Self(fd)
    }

    pub fn open(path: &CStr, flags: u64) -> SysResult<Self> {
        // SAFETY: `path` is NUL-terminated and outlives the call.
        let ret = unsafe {
            syscall(SYS_OPENAT, [AT_FDCWD as u64, path.as_ptr() as u64, flags | O_CLOEXEC, 0, 0, 0])
        };
        check(ret).map(|fd| Self(fd as i32))
    }

    /// `ioctl(fd, request, arg)` with `arg` a plain number.
    ///
    /// # Safety
    /// `request` must not use `arg` as a pointer.
    pub unsafe fn ioctl(&self, request: u64, arg: u64) -> SysResult<u64> {
        // SAFETY: the caller vouches that no memory is accessed through `arg`.
        check(unsafe { syscall(SYS_IOCTL, [self.0 as u64, request, arg, 0, 0, 0]) })
    }

    /// `ioctl(fd, request, string)`.
    ///
    /// # Safety
    /// `request` must only read a NUL-terminated string at its argument.
    pub unsafe fn ioctl_cstr(&self, request: u64, arg: &CStr) -> SysResult<u64> {
        // SAFETY: `arg` is NUL-terminated and outlives the call; the caller vouches that the
        // kernel reads nothing else through it.
        check(unsafe { syscall(SYS_IOCTL, [self.0 as u64, request, arg.as_ptr() as u64, 0, 0, 0]) })
    }

    /// `ioctl(fd, request, &mut value)`.
    ///
    /// # Safety
    /// `request` must read and write at most `size_of::<T>()` bytes at its argument, with the
    /// layout `T` has (a `#[repr(C)]` copy of the kernel's structure).
    pub unsafe fn ioctl_ptr<T>(&self, request: u64, value: &mut T) -> SysResult<u64> {
        let ptr = core::ptr::from_mut(value) as u64;
        // SAFETY: the caller vouches for the request's use of the argument; `value` is a valid,
        // exclusive reference for the duration of the call.
        check(unsafe { syscall(SYS_IOCTL, [self.0 as u64, request, ptr, 0, 0, 0]) })
    }

    pub fn pread(&self, buf: &mut [u8], offset: u64) -> SysResult<usize> {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        let ret = unsafe {
            syscall(
                SYS_PREAD64,
                [self.0 as u64, buf.as_mut_ptr() as u64, buf.len() as u64, offset, 0, 0],
            )
        };
        check(ret).map(|n| n as usize)
    }

    pub fn pwrite(&self, buf: &[u8], offset: u64) -> SysResult<usize> {
        // SAFETY: the kernel reads at most `buf.len()` bytes from `buf`.
        let ret = unsafe {
            syscall(
                SYS_PWRITE64,
                [self.0 as u64, buf.as_ptr() as u64, buf.len() as u64, offset, 0, 0],
            )
        };
        check(ret).map(|n| n as usize)
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closing a descriptor this value owns; nothing uses it afterwards. An error
        // (EINTR, EIO) leaves nothing to do.
        let _ = unsafe { syscall(SYS_CLOSE, [self.0 as u64, 0, 0, 0, 0, 0]) };
    }
}

/// Writes all of `bytes` to descriptor `fd` (stdout, stderr: never closed); gives up on an
/// error, as there is nowhere to report it.
pub fn write_raw(fd: i32, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: the kernel reads at most `rest.len()` bytes from `rest`.
        let ret = unsafe {
            syscall(SYS_WRITE, [fd as u64, rest.as_ptr() as u64, rest.len() as u64, 0, 0, 0])
        };
        match check(ret) {
            Ok(0) | Err(_) => return,
            Ok(n) => rest = &rest[n as usize..],
        }
    }
}

/// A memory mapping, unmapped when dropped. Accessed through raw pointers only (it may be
/// device memory, or memory a device writes behind the program's back).
#[derive(Debug)]
pub struct Mapping {
    base: *mut u8,
    len: usize,
}

impl Mapping {
    /// `mmap(NULL, len, prot, flags, fd, offset)`.
    pub fn new(len: usize, prot: u64, flags: u64, fd: Option<&Fd>, offset: u64) -> SysResult<Self> {
        let fd = fd.map_or(-1i64 as u64, |fd| fd.0 as u64);
        // SAFETY: a fresh mapping chosen by the kernel (address hint 0) replaces nothing the
        // program uses.
        let ret = unsafe { syscall(SYS_MMAP, [0, len as u64, prot, flags, fd, offset]) };
        check(ret).map(|addr| Self { base: addr as *mut u8, len })
    }

    pub fn base(&self) -> *mut u8 {
        self.base
    }

    pub fn addr(&self) -> u64 {
        self.base as u64
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's; nothing refers to it after the drop.
        let _ = unsafe { syscall(SYS_MUNMAP, [self.base as u64, self.len as u64, 0, 0, 0, 0]) };
    }
}

/// Ends the process with `code`.
pub fn exit(code: i32) -> ! {
    // SAFETY: exit_group takes no pointer and does not return.
    unsafe {
        syscall(SYS_EXIT_GROUP, [code as u64, 0, 0, 0, 0, 0]);
    }
    unreachable!("exit_group returned")
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

/// Sleeps `ms` milliseconds (an interrupted sleep just ends early: callers poll).
pub fn sleep_ms(ms: u64) {
    let t = Timespec { sec: (ms / 1000) as i64, nsec: ((ms % 1000) * 1_000_000) as i64 };
    // SAFETY: nanosleep reads `t` and, with a null second argument, writes nothing.
    let _ = unsafe { syscall(SYS_NANOSLEEP, [core::ptr::from_ref(&t) as u64, 0, 0, 0, 0, 0]) };
}

/// CLOCK_MONOTONIC in milliseconds.
pub fn now_ms() -> u64 {
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `t`.
    let ret = unsafe {
        syscall(
            SYS_CLOCK_GETTIME,
            [CLOCK_MONOTONIC, core::ptr::from_mut(&mut t) as u64, 0, 0, 0, 0],
        )
    };
    if ret != 0 {
        return 0;
    }
    t.sec as u64 * 1000 + t.nsec as u64 / 1_000_000
}
