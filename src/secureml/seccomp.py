"""seccomp: a small deny-list that bwrap loads just before it execs the trainee's command.

Without it, the sandbox uid can still create a user namespace (measured: `unshare -Urm`
inside the sandbox gave it "root" and a tmpfs mount). That cannot undo our read-only
binds, but it opens the kernel surface most privilege-escalation bugs need. So: no new
namespaces, no mounts, no keyrings, bpf, perf, userfaultfd or io_uring; nothing that
Python, numpy or torch use on CPU. x86-64 only: the numbers below are its syscall table
(arch/x86/entry/syscalls/syscall_64.tbl); other machines run without the filter.

Only the standard library: `secureml.isolation` probes with it and `secureml.sandbox` runs
every sandbox with it.
"""

from __future__ import annotations

import platform
import struct

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_SYSCALL_CLONE = 56
_SYSCALL_CLONE3 = 435  # its flags sit in memory a filter cannot read: report ENOSYS,
# and glibc falls back to clone(), whose flags we can check
_CLONE_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_DENIED_SYSCALLS_X86_64 = {
    "unshare": 272, "setns": 308,
    "mount": 165, "umount2": 166, "pivot_root": 155, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "add_key": 248, "request_key": 249, "keyctl": 250,
    "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "acct": 163, "swapon": 167, "swapoff": 168, "reboot": 169,
}
# Where the supervisor, not a memory cgroup, limits memory, it sees only what processes
# map. An unmapped memfd or SysV segment would hold memory it cannot see, so these two go
# (a cgroup charges them, and Python, numpy and torch use /dev/shm files instead).
_DENIED_WITHOUT_MEMORY_CGROUP_X86_64 = {"memfd_create": 319, "shmget": 29}
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000


def seccomp_program(*, supervised_memory: bool) -> bytes | None:
    """The compiled classic-BPF filter for bwrap's --seccomp, or None off x86-64."""
    if platform.machine() != "x86_64":
        return None
    denied = dict(_DENIED_SYSCALLS_X86_64)
    if supervised_memory:
        denied.update(_DENIED_WITHOUT_MEMORY_CGROUP_X86_64)
    load_word, jump_eq, jump_ge, jump_set, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    eperm = _SECCOMP_RET_ERRNO | 1  # EPERM
    enosys = _SECCOMP_RET_ERRNO | 38  # ENOSYS
    # (code, jump-if-true label, jump-if-false label, k); None means the next instruction.
    program: list[tuple[int, str | None, str | None, int]] = [
        (load_word, None, None, 4),  # seccomp_data.arch
        (jump_eq, None, "enosys", _AUDIT_ARCH_X86_64),  # i386 or other ABIs: refuse all
        (load_word, None, None, 0),  # seccomp_data.nr
        (jump_ge, "enosys", None, _X32_SYSCALL_BIT),  # the x32 ABI: refuse all
        (jump_eq, "enosys", None, _SYSCALL_CLONE3),
        (jump_eq, "clone", None, _SYSCALL_CLONE),
        *[(jump_eq, "eperm", None, number) for number in sorted(denied.values())],
        (ret, None, None, _SECCOMP_RET_ALLOW),
        ("clone", None, None, 0),  # type: ignore[list-item]  # a label
        (load_word, None, None, 16),  # low 32 bits of args[0], the clone flags
        (jump_set, "eperm", None, _CLONE_NAMESPACE_FLAGS),
        (ret, None, None, _SECCOMP_RET_ALLOW),
        ("eperm", None, None, 0),  # type: ignore[list-item]
        (ret, None, None, eperm),
        ("enosys", None, None, 0),  # type: ignore[list-item]
        (ret, None, None, enosys),
    ]
    labels: dict[str, int] = {}
    instructions = []
    for code, if_true, if_false, k in program:
        if isinstance(code, str):
            labels[code] = len(instructions)
        else:
            instructions.append((code, if_true, if_false, k))

    def offset(label: str | None, index: int) -> int:
        return 0 if label is None else labels[label] - index - 1

    return b"".join(
        struct.pack("=HBBI", code, offset(if_true, index), offset(if_false, index), k)
        for index, (code, if_true, if_false, k) in enumerate(instructions)
    )
