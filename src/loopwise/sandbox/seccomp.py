"""A seccomp filter for sandboxed code, written as classic BPF without any dependency.

bubblewrap loads it (``--seccomp FD``) just before it starts the command. It denies what
code in a sandbox never needs and what would widen its reach: new namespaces (a nested
user namespace gives uid 0 with every capability inside it), ``setns``, the kernel keyring
(shared by every process of a uid), io_uring, bpf, perf events, userfaultfd, ptrace and
process memory access, mounts, kernel modules, kexec, file handles, and other
administration calls. ``clone3`` fails with ENOSYS, so the C library falls back to
``clone``, whose flags the filter can read; every other denial is EPERM. A system call made
through another ABI (i386 or x32 on x86_64) fails with EPERM, since its numbers differ.
"""

from __future__ import annotations

import errno
import os
import platform
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

__all__ = ["BLOCKED", "SeccompUnsupported", "filter_program", "open_filter", "supported"]

# struct sock_filter opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
# struct seccomp_data: nr at 0, arch at 4, ip at 8, args at 16 (low 32 bits first: LE).
_NR, _ARCH, _ARG0_LOW = 0, 4, 16
_X32_BIT = 0x40000000

_CLONE_NEWNS = 0x00020000
_NAMESPACES = (
    _CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
_CLONE_NEWTIME = 0x00000080  # unshare only: in clone's flags this byte is the exit signal


@dataclass(frozen=True, slots=True)
class _Arch:
    audit: int
    numbers: dict[str, int]
    x32: bool = False


# Numbers from the kernel's uapi headers (asm/unistd_64.h; asm-generic/unistd.h for arm64).
_GENERIC = {
    "clone3": 435, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "pidfd_getfd": 438, "mount_setattr": 442, "quotactl_fd": 443,
    "open_tree_attr": 467,
}  # fmt: skip
_X86_64 = _Arch(
    0xC000003E,
    _GENERIC | {
        "clone": 56, "unshare": 272, "setns": 308, "keyctl": 250, "add_key": 248,
        "request_key": 249, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
        "kexec_load": 246, "kexec_file_load": 320, "mount": 165, "umount2": 166,
        "pivot_root": 155, "chroot": 161, "open_by_handle_at": 304,
        "name_to_handle_at": 303, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "swapon": 167, "swapoff": 168, "reboot": 169, "syslog": 103,
        "acct": 163, "quotactl": 179, "lookup_dcookie": 212, "vhangup": 153,
        "fanotify_init": 300, "sethostname": 170, "setdomainname": 171,
        "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159,
        "nfsservctl": 180, "iopl": 172, "ioperm": 173, "modify_ldt": 154, "uselib": 134,
        "_sysctl": 156, "create_module": 174, "get_kernel_syms": 177, "query_module": 178,
    },
    x32=True,
)  # fmt: skip
_AARCH64 = _Arch(
    0xC00000B7,
    _GENERIC | {
        "clone": 220, "unshare": 97, "setns": 268, "keyctl": 219, "add_key": 217,
        "request_key": 218, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
        "kexec_load": 104, "kexec_file_load": 294, "mount": 40, "umount2": 39,
        "pivot_root": 41, "chroot": 51, "open_by_handle_at": 265, "name_to_handle_at": 264,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "swapon": 224,
        "swapoff": 225, "reboot": 142, "syslog": 116, "acct": 89, "quotactl": 60,
        "lookup_dcookie": 18, "vhangup": 58, "fanotify_init": 262, "sethostname": 161,
        "setdomainname": 162, "settimeofday": 170, "clock_settime": 112,
        "clock_adjtime": 266, "adjtimex": 171, "nfsservctl": 42,
    },
)  # fmt: skip
_ARCHES = {"x86_64": _X86_64, "amd64": _X86_64, "aarch64": _AARCH64, "arm64": _AARCH64}

_BY_FLAGS = {"clone": _NAMESPACES, "unshare": _NAMESPACES | _CLONE_NEWTIME}
_ENOSYS = frozenset({"clone3"})
BLOCKED = frozenset(_X86_64.numbers) - frozenset(_BY_FLAGS)
"""Calls denied outright (on architectures that have them); clone/unshare only with
namespace flags."""


class SeccompUnsupported(RuntimeError):
    """No filter is defined for this machine's architecture."""


def supported(machine: str | None = None) -> bool:
    """Whether a filter exists for ``machine`` (default: this one)."""
    return (machine or platform.machine()).lower() in _ARCHES


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _ret(value: int) -> bytes:
    return _insn(_RET_K, value)


def _body(arch: _Arch) -> Iterator[bytes]:
    deny = _ret(_RET_ERRNO | errno.EPERM)
    yield _insn(_LD_W_ABS, _ARCH)
    yield _insn(_JEQ_K, arch.audit, jt=1)
    yield deny
    yield _insn(_LD_W_ABS, _NR)
    if arch.x32:
        yield _insn(_JGE_K, _X32_BIT, jf=1)
        yield deny
    for name, number in sorted(arch.numbers.items(), key=lambda item: item[1]):
        if name in _BY_FLAGS:
            # nr matches: load the flags; any namespace bit -> EPERM, else allow.
            yield _insn(_JEQ_K, number, jf=4)
            yield _insn(_LD_W_ABS, _ARG0_LOW)
            yield _insn(_JSET_K, _BY_FLAGS[name], jf=1)
            yield deny
            yield _ret(_RET_ALLOW)
        else:
            yield _insn(_JEQ_K, number, jf=1)
            yield _ret(_RET_ERRNO | (errno.ENOSYS if name in _ENOSYS else errno.EPERM))
    yield _ret(_RET_ALLOW)


@cache
def filter_program(machine: str | None = None) -> bytes:
    """The filter as bubblewrap reads it: an array of ``struct sock_filter`` (native order).

    Raises :class:`SeccompUnsupported` for an architecture without a syscall table here.
    """
    name = (machine or platform.machine()).lower()
    arch = _ARCHES.get(name)
    if arch is None:
        raise SeccompUnsupported(
            f"No seccomp filter is defined for the {name!r} architecture (x86_64 and "
            "aarch64 are supported)."
        )
    return b"".join(_body(arch))


def open_filter() -> int:
    """A readable descriptor holding the filter, positioned at its start; the caller closes it."""
    program = filter_program()
    read_end, write_end = os.pipe()
    try:
        # Far below the pipe buffer (64 KiB): the write never blocks.
        os.write(write_end, program)
    finally:
        os.close(write_end)
    return read_end
