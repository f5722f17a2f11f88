"""Landlock: the Linux kernel's sandbox for unprivileged processes, through ctypes.

The student kernel calls :func:`restrict` once, before it runs any student code. From then on,
that process and every process it starts can

- read only below the folders it was given (the Python installation, the ``handbook`` package,
  system libraries, the data caches, its scratch folder): not other students' submissions, not
  the instructor's home, not the gradebook;
- create, write, rename or delete files only below its scratch folder (and write ``/dev/null``);
- open no TCP connection and listen on no TCP port (kernel ABI 4 or later);
- send no signal to a process outside its own sandbox, such as the grader or another student's
  kernel (ABI 6 or later).

A restriction can never be lifted, not even by root, and it is inherited across ``fork`` and
``exec``. It applies to the calling thread only, so :func:`restrict` must run while the process
has a single thread (the sandbox launcher calls it before ipykernel starts its threads).

Landlock exists in Linux 5.13 and later (ABI 1); newer kernels add rights (listed below with the
ABI that introduced them), and :func:`restrict` uses every right the running kernel knows. Where
Landlock is missing (macOS, Windows, old or locked-down kernels) :func:`abi_version` returns 0
and the caller decides what to do (the grader warns and relies on its other defences).

Reference: https://docs.kernel.org/userspace-api/landlock.html (the constants below are those of
``include/uapi/linux/landlock.h``; the system call numbers are the same on every architecture).
"""

from __future__ import annotations

import ctypes
import os
import sys

# System calls (identical on all architectures, since they were added after the unification).
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights, with the ABI that introduced them.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER = 1 << 13      # ABI 2: move or link a file into another folder
TRUNCATE = 1 << 14   # ABI 3
# Network rights (ABI 4) and scopes (ABI 6).
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

READ = EXECUTE | READ_FILE | READ_DIR
WRITE = (WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_CHAR | MAKE_DIR | MAKE_REG | MAKE_SOCK
         | MAKE_FIFO | MAKE_BLOCK | MAKE_SYM | REFER | TRUNCATE)
# The only rights a rule on a single file (not a folder) may carry.
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE


class LandlockError(OSError):
    """Landlock is missing, or the kernel refused the ruleset."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the kernel header: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _fail(what: str) -> LandlockError:
    errno = ctypes.get_errno()
    return LandlockError(errno, f"landlock: {what} failed: {os.strerror(errno)}")


def abi_version() -> int:
    """The Landlock ABI of the running kernel (1, 2, ...), or 0 where Landlock is unavailable."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = _libc().syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                                  ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def available() -> bool:
    return abi_version() > 0


def _fs_rights(abi: int) -> int:
    """The filesystem rights this ABI knows: asking for an unknown one makes the kernel refuse."""
    rights = READ | WRITE
    if abi < 2:
        rights &= ~REFER
    if abi < 3:
        rights &= ~TRUNCATE
    return rights


def _ruleset_size(abi: int) -> int:
    # The struct grew with the ABI: the kernel rejects fields it does not know.
    return 8 if abi < 4 else 16 if abi < 6 else 24


def restrict(readable: list[str], writable: list[str], writable_files: list[str] = ()) -> int:
    """Confine this thread and its future children, for good. Returns the ABI that was used.

    readable:        folders whose whole subtree may be read and executed.
    writable:        folders whose whole subtree may also be written (created, removed, renamed).
    writable_files:  single files that may be read and written (e.g. /dev/null).
    Paths that do not exist are skipped. Raises LandlockError if Landlock is unavailable or the
    kernel refuses a rule: a sandbox that is silently weaker than asked for is worse than none.
    """
    abi = abi_version()
    if abi == 0:
        raise LandlockError(0, "landlock: not available on this system (Linux >= 5.13 with landlock enabled)")
    libc = _libc()
    handled = _fs_rights(abi)
    attr = _RulesetAttr(handled_access_fs=handled,
                        # No rule allows any port: no TCP connection, no TCP server.
                        handled_access_net=(NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0,
                        scoped=(SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0)
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(_ruleset_size(abi)),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        raise _fail("create_ruleset")
    try:
        rules = [(p, READ) for p in readable] + [(p, READ | WRITE) for p in writable]
        rules += [(p, _FILE_RIGHTS) for p in writable_files]
        for path, rights in rules:
            _add_path_rule(libc, ruleset, path, rights & handled)
        # Required before restrict_self for an unprivileged process; also stops setuid binaries
        # from regaining privileges.
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _fail("prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise _fail("restrict_self")
    finally:
        os.close(ruleset)
    return abi


def _add_path_rule(libc, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        if libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                        ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
            raise _fail(f"add_rule({path!r})")
    finally:
        os.close(fd)
