"""Attacks on the sandbox as root (security test 20): nested user namespaces, the keyring,
io_uring, bpf and the rest of the kernel surface; per-run isolation; the workspace quota;
deep and huge trees. Each class is a list of variants, and each variant counts as held only
when the attack failed.

Needs bubblewrap (skips with the reason without it, fails under ``CI=true``), except the
filter's own tests, which run the BPF program in a small interpreter for both
architectures.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from figures import figure
from loopwise.sandbox import BubblewrapSandbox, Limits, SandboxResult, SandboxUnavailable, seccomp
from loopwise.sandbox.workspace import MAX_DEPTH, give_to, scan

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def box() -> BubblewrapSandbox:
    sandbox = BubblewrapSandbox()
    try:
        sandbox.check()
    except SandboxUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"bubblewrap is required here but unavailable: {exc}")
        pytest.skip(f"bubblewrap unavailable: {exc}")
    return sandbox


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "ws"
    path.mkdir()
    yield path
    # Deep trees outlive Python's recursive rmtree (pytest's cleanup): rm walks any depth.
    subprocess.run(["rm", "-rf", str(tmp_path)], check=False)


def run(box: BubblewrapSandbox, argv: list[str], ws: Path, **kwargs: object) -> SandboxResult:
    return asyncio.run(box.run(argv, workspace=ws, **kwargs))  # type: ignore[arg-type]


def py(box: BubblewrapSandbox, code: str, ws: Path, **kwargs: object) -> SandboxResult:
    return run(box, ["python3", "-c", code], ws, **kwargs)


# ---------------------------------------------------------------------------------------
# The filter itself, run in a classic-BPF interpreter (both architectures, no kernel)


def bpf_run(program: bytes, nr: int, arch: int, arg0: int = 0) -> int:
    """Evaluate a seccomp cBPF program (the opcodes the filter uses) on one system call."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            (acc,) = struct.unpack_from("<I", data, k)
        elif code == 0x06:
            return int(k)
        elif code in (0x15, 0x35, 0x45):
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


ALLOW, EPERM = 0x7FFF0000, 0x00050000 | errno.EPERM
CLONE_NEWUSER, SIGCHLD = 0x10000000, 17
ARCHES = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),
}


@pytest.mark.parametrize("machine", sorted(ARCHES))
def test_filter_denies_the_list_and_allows_the_rest(machine: str) -> None:
    program = seccomp.filter_program(machine)
    arch = ARCHES[machine]
    numbers = seccomp._ARCHES[machine].numbers
    assert len(program) % 8 == 0 and len(program) // 8 < 4096
    for name, nr in numbers.items():
        want = 0x00050000 | (errno.ENOSYS if name == "clone3" else errno.EPERM)
        if name in ("clone", "unshare"):
            assert bpf_run(program, nr, arch, CLONE_NEWUSER | SIGCHLD) == EPERM, name
            assert bpf_run(program, nr, arch, 0x20000) == EPERM, name  # CLONE_NEWNS
            assert bpf_run(program, nr, arch, 0x3D0F00 | SIGCHLD) == ALLOW, name  # threads
        else:
            assert bpf_run(program, nr, arch, 0) == want, name
    blocked = set(numbers.values())
    allowed = [nr for nr in range(0, 470) if nr not in blocked]
    assert all(bpf_run(program, nr, arch) == ALLOW for nr in allowed)
    assert bpf_run(program, 0, 0x40000003) == EPERM  # i386 ABI: other numbers, all denied
    if machine == "x86_64":
        assert bpf_run(program, 0x40000000 | 272, arch, CLONE_NEWUSER) == EPERM  # x32
    figure(f"seccomp filter {machine}: {len(numbers)} calls, {len(program) // 8} instructions")


@pytest.mark.parametrize("machine", sorted(HEADERS))
def test_filter_numbers_match_the_kernel_headers(machine: str) -> None:
    header = HEADERS[machine]
    if not header.exists():
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    found = dict(re.findall(r"#define __NR(?:3264)?_(\w+)\s+(\d+)", header.read_text()))
    numbers = seccomp._ARCHES[machine].numbers
    checked = {name for name in numbers if name in found}
    assert {name: numbers[name] for name in checked} == {n: int(found[n]) for n in checked}
    assert len(checked) >= len(numbers) - 1  # open_tree_attr (6.15) is newer than most


def test_no_filter_for_unknown_architectures() -> None:
    assert not seccomp.supported("riscv64") and seccomp.supported("x86_64")
    with pytest.raises(seccomp.SeccompUnsupported, match="riscv64"):
        seccomp.filter_program("riscv64")


# ---------------------------------------------------------------------------------------
# Item 6: the kernel surface from inside (real syscalls through ctypes)

SYSCALLS = r"""
import ctypes, json, os, platform
libc = ctypes.CDLL(None, use_errno=True)
X86 = platform.machine() == "x86_64"
NR = dict(unshare=(272, 97), clone=(56, 220), clone3=(435, 435), setns=(308, 268),
          keyctl=(250, 219), add_key=(248, 217), request_key=(249, 218),
          io_uring_setup=(425, 425), bpf=(321, 280), perf_event_open=(298, 241),
          userfaultfd=(323, 282), ptrace=(101, 117), process_vm_readv=(310, 270),
          mount=(165, 40), umount2=(166, 39), pivot_root=(155, 41),
          open_by_handle_at=(304, 265), name_to_handle_at=(303, 264),
          init_module=(175, 105), finit_module=(313, 273), kexec_load=(246, 104),
          fsopen=(430, 430), open_tree=(428, 428), kcmp=(312, 272), pidfd_getfd=(438, 438))
def call(name, *args):
    nr = NR[name][0 if X86 else 1]
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_void_p(a) for a in args])
    if ret == 0 and name == "clone":
        os._exit(0)  # the child of a clone that went through
    if ret > 0 and name == "clone":
        os.waitpid(ret, 0)
    return ctypes.get_errno() if ret < 0 else "ok"
buf = ctypes.create_string_buffer(512)
p = ctypes.addressof(buf)
me = os.getpid()
out = {
    "unshare(NEWUSER)": call("unshare", 0x10000000),
    "unshare(NEWUSER|NEWNS)": call("unshare", 0x10020000),
    "unshare(NEWNET)": call("unshare", 0x40000000),
    "clone(NEWUSER)": call("clone", 0x10000000 | 17, 0, 0, 0, 0),
    "clone3": call("clone3", p, 88),
    "setns": call("setns", os.open("/proc/self/ns/uts", os.O_RDONLY), 0),
    "keyctl(get @u)": call("keyctl", 0, 2**64 - 4, 0),
    "add_key": call("add_key", p, p, p, 1, 2**64 - 4),
    "request_key": call("request_key", p, p, 0, 0),
    "io_uring_setup": call("io_uring_setup", 4, p),
    "bpf": call("bpf", 0, p, 72),
    "perf_event_open": call("perf_event_open", p, 0, 2**64 - 1, 2**64 - 1, 0),
    "userfaultfd": call("userfaultfd", 1),
    "ptrace(TRACEME)": call("ptrace", 0, 0, 0, 0),
    "process_vm_readv": call("process_vm_readv", me, p, 1, p, 1, 0),
    "mount": call("mount", 0, p, 0, 0, 0),
    "umount2": call("umount2", p, 0),
    "pivot_root": call("pivot_root", p, p),
    "open_by_handle_at": call("open_by_handle_at", 3, p, 0),
    "name_to_handle_at": call("name_to_handle_at", 2**64 - 100, p, p, p, 0),
    "init_module": call("init_module", p, 0, p),
    "finit_module": call("finit_module", 0, p, 0),
    "kexec_load": call("kexec_load", 0, 0, 0, 0),
    "fsopen": call("fsopen", p, 0),
    "open_tree": call("open_tree", 2**64 - 100, p, 0),
    "kcmp": call("kcmp", me, me, 0, 0, 0),
    "pidfd_getfd": call("pidfd_getfd", 0, 0, 0),
}
if X86:
    out["x32 getpid"] = (libc.syscall(ctypes.c_long(0x40000000 | 39)) >= 0) or ctypes.get_errno()
print(json.dumps(out))
"""

SHELL_VECTORS = {
    "unshare -Ur": ["unshare", "-Ur", "id", "-u"],
    "unshare -Urm": ["unshare", "-Urm", "sh", "-c", "mount -t tmpfs x /tmp && echo mounted"],
    "unshare -Un": ["unshare", "-Un", "true"],
    "unshare --user --map-root-user --pid --fork": [
        "unshare", "--user", "--map-root-user", "--pid", "--fork", "true"
    ],
}  # fmt: skip


def test_kernel_surface_is_closed(box: BubblewrapSandbox, ws: Path) -> None:
    result = py(box, SYSCALLS, ws)
    assert result.exit_code == 0, result.stderr
    seen = json.loads(result.stdout)
    open_ = {name: got for name, got in seen.items() if got == "ok" or got is True}
    wrong = {
        name: got
        for name, got in seen.items()
        if got not in ((errno.ENOSYS,) if name == "clone3" else (errno.EPERM,))
    }
    held = len(seen) - len(open_)
    for name, argv in SHELL_VECTORS.items():
        shell = run(box, argv, ws)
        if shell.exit_code == 0:
            open_[name] = shell.stdout
        else:
            held += 1
            assert "Operation not permitted" in shell.stderr, shell.stderr
    figure(f"sandbox kernel surface: {len(seen) + len(SHELL_VECTORS)} calls tried, {held} held")
    assert not open_, f"reachable from the sandbox: {open_}"
    assert not wrong, f"denied with another errno than the filter's: {wrong}"


ORDINARY = r"""
import asyncio, concurrent.futures, hashlib, json, multiprocessing, os, subprocess, threading
def square(x): return x * x
out = {}
t = threading.Thread(target=lambda: out.setdefault("thread", True)); t.start(); t.join()
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    out["pool"] = sum(pool.map(square, range(10)))
with multiprocessing.get_context("fork").Pool(2) as procs:
    out["fork pool"] = sum(procs.map(square, range(10)))
spawned = subprocess.run(["sh", "-c", "echo a | tr a b"], capture_output=True, text=True)
out["spawn"] = spawned.stdout
out["asyncio"] = asyncio.run(asyncio.sleep(0, result="ok"))
with open("f.txt", "w") as f: f.write("x" * 1000)
out["file"] = hashlib.sha256(open("f.txt", "rb").read()).hexdigest()[:8]
print(json.dumps(out))
"""


def test_ordinary_code_still_runs(box: BubblewrapSandbox, ws: Path) -> None:
    result = py(box, ORDINARY, ws)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "thread": True, "pool": 285, "fork pool": 285, "spawn": "b\n", "asyncio": "ok",
        "file": "44f83544",
    }  # fmt: skip
    shell = run(box, ["sh", "-c", "ls / >/dev/null && seq 3 | sort -r | head -1 && date +%Y"], ws)
    assert shell.exit_code == 0 and shell.stdout.startswith("3\n"), shell.stderr


# ---------------------------------------------------------------------------------------
# Item 7: one run's keys are not another's


KEYS = r"""
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
X86 = __import__("platform").machine() == "x86_64"
ADD_KEY, KEYCTL = (248, 250) if X86 else (217, 219)
USER_KEYRING, SESSION_KEYRING = -4, -3
def sc(nr, *a):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *a)
    return r if r >= 0 else -ctypes.get_errno()
mode, name = sys.argv[1], sys.argv[2].encode()
if mode == "add":
    out = {ring: sc(ADD_KEY, b"user", name, b"secret-" + name, ctypes.c_size_t(13 + len(name)),
                    ctypes.c_long(num)) for ring, num in (("user", USER_KEYRING),
                                                          ("session", SESSION_KEYRING))}
else:
    buf = ctypes.create_string_buffer(4096)
    found = sc(KEYCTL, ctypes.c_long(10), ctypes.c_long(USER_KEYRING), b"user", name,
               ctypes.c_long(0))  # KEYCTL_SEARCH
    read = sc(KEYCTL, ctypes.c_long(11), ctypes.c_long(found), buf, ctypes.c_long(4096)) \
        if found > 0 else found  # KEYCTL_READ
    listed = sc(KEYCTL, ctypes.c_long(11), ctypes.c_long(USER_KEYRING), buf,
                ctypes.c_long(4096))  # read the keyring: the ids in it
    try:
        proc = open("/proc/keys").read()
    except OSError as exc:
        proc = f"error {exc.errno}"
    out = {"search": found, "read": read, "list": listed, "payload": buf.raw.split(b"\0")[0]
           .decode("latin-1"), "proc": proc}
print(json.dumps(out))
"""


def test_runs_share_no_keyring(box: BubblewrapSandbox, tmp_path: Path) -> None:
    name = f"loopwise-canary-{uuid.uuid4().hex[:8]}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    added = run(box, ["python3", "-c", KEYS, "add", name], tmp_path / "a")
    assert added.exit_code == 0, added.stderr
    adds = json.loads(added.stdout)
    read = run(box, ["python3", "-c", KEYS, "read", name], tmp_path / "b")
    assert read.exit_code == 0, read.stderr
    seen = json.loads(read.stdout)
    attempts = {**{f"add to {k}": v for k, v in adds.items()}, **seen}
    leaks = [k for k in ("search", "read", "list") if seen[k] >= 0]
    leaks += [k for k, v in adds.items() if v >= 0]
    leaks += ["payload"] * ("secret" in seen["payload"]) + ["/proc/keys"] * (name in seen["proc"])
    figure(f"sandbox keyring: {len(attempts)} attempts across two runs, {len(leaks)} got through")
    assert not leaks, attempts
    assert all(adds[k] == -errno.EPERM for k in adds) and seen["search"] == -errno.EPERM


# ---------------------------------------------------------------------------------------
# Item 8: the workspace quota, huge and deep trees

FILL_SHELL = "for i in $(seq 1 24); do head -c 4000000 /dev/zero > f$i; done; echo wrote"
FILL_PY = (
    "import os\nfor i in range(24):\n"
    "    with open(f'p{i}', 'wb') as f: f.write(os.urandom(4_000_000))\nprint('wrote')"
)
FILL_THREADS = (
    "import threading\n"
    "def w(n):\n"
    "    for i in range(6):\n"
    "        open(f't{n}-{i}', 'wb').write(b'x' * 4_000_000)\n"
    "ts = [threading.Thread(target=w, args=(n,)) for n in range(4)]\n"
    "[t.start() for t in ts]; [t.join() for t in ts]; print('wrote')"
)
FILL_SLOW = "for i in $(seq 1 24); do head -c 4000000 /dev/zero > s$i; sleep 0.05; done"
FILL_DD = "for i in $(seq 1 24); do dd if=/dev/zero of=d$i bs=1M count=4 2>/dev/null; done"
FILL_FALLOCATE = (
    "import os\nfor i in range(24):\n"
    "    fd = os.open(f'a{i}', os.O_CREAT | os.O_WRONLY)\n"
    "    os.posix_fallocate(fd, 0, 4_000_000); os.close(fd)\nprint('wrote')"
)


def usage(ws: Path) -> tuple[int, int]:
    seen = scan(ws, max_entries=10**6, record=0, max_depth=10_000)
    return seen.bytes, seen.entries


@pytest.mark.slow
def test_aggregate_disk_quota(box: BubblewrapSandbox, tmp_path: Path) -> None:
    limits = Limits(max_file_mb=4, max_workspace_mb=16, wall_seconds=30)
    held, results = 0, []
    scripts = (FILL_SHELL, FILL_PY, FILL_THREADS, FILL_SLOW, FILL_DD, FILL_FALLOCATE)
    for i, script in enumerate(scripts):
        ws = tmp_path / f"fill{i}"
        ws.mkdir()
        started = time.monotonic()
        if "import" in script:
            result = py(box, script, ws, limits=limits)
        else:
            result = run(box, ["sh", "-c", script], ws, limits=limits)
        used, _ = usage(ws)
        results.append(f"{used / MIB:.1f} MB in {time.monotonic() - started:.2f}s")
        if used <= 16 * MIB and result.workspace_note:
            held += 1
        assert result.workspace_note and "quota" in result.workspace_note
        assert used <= 16 * MIB, (script, used, result.summary())
    figure(f"sandbox disk quota (95 MB against 16 MB): {held}/{len(scripts)} held; left: {results}")
    assert held == len(scripts)


def test_over_quota_workspace_only_shrinks(box: BubblewrapSandbox, ws: Path) -> None:
    limits = Limits(max_workspace_mb=8, max_workspace_files=100)
    keep = ws / "dataset.bin"
    keep.write_bytes(os.urandom(12 * MIB))  # put there by the user: over quota, kept
    grow = run(box, ["sh", "-c", "head -c 3000000 /dev/urandom > more.bin; echo $?"], ws,
               limits=limits)  # fmt: skip
    assert keep.exists() and not (ws / "more.bin").exists()
    assert grow.workspace_note and "over its quota" in grow.workspace_note
    renamed = run(box, ["sh", "-c", "mv dataset.bin moved.bin && head -c 2000000 /dev/zero > x"],
                  ws, limits=limits)  # fmt: skip
    assert renamed.exit_code is not None
    assert (ws / "moved.bin").stat().st_size == 12 * MIB  # old data is never removed
    clean = run(box, ["sh", "-c", "rm moved.bin && head -c 1000000 /dev/zero > small"], ws,
                limits=limits)  # fmt: skip
    assert clean.ok and clean.workspace_note is None and (ws / "small").exists()


def test_links_appends_and_sparse_files(box: BubblewrapSandbox, ws: Path) -> None:
    limits = Limits(max_workspace_mb=8, max_workspace_files=200)
    (ws / "log.txt").write_bytes(b"old line\n" * 1000)
    links = py(box, "import os\nfor i in range(5000):\n    os.link('log.txt', f'l{i}')", ws,
               limits=limits)  # fmt: skip
    assert links.killed_by == "workspace_quota" or links.workspace_note, links.summary()
    assert usage(ws)[1] <= 200 and (ws / "log.txt").read_bytes().startswith(b"old line")
    grow = run(box, ["sh", "-c", "head -c 12000000 /dev/zero >> log.txt"], ws, limits=limits)
    assert (ws / "log.txt").exists() and grow.workspace_note  # appended: kept, and reported
    for link in ws.glob("l[0-9]*"):
        link.unlink()
    (ws / "log.txt").write_bytes(b"small\n")
    sparse = run(box, ["sh", "-c", "truncate -s 60M sparse.img && echo made"], ws, limits=limits)
    assert sparse.ok and sparse.workspace_note is None and (ws / "sparse.img").exists()
    held = [links.workspace_note is not None, grow.workspace_note is not None, sparse.ok]
    figure(f"sandbox quota, hard links / appends / sparse files: {sum(held)}/3 as intended")


@pytest.mark.slow
def test_file_flood_is_capped_and_later_runs_stay_fast(box: BubblewrapSandbox, ws: Path) -> None:
    quick = [run(box, ["true"], ws).duration for _ in range(3)]
    flood = py(
        box,
        "import os\nos.mkdir('m')\nfor i in range(100_000):\n    open(f'm/{i}', 'w').close()",
        ws,
    )
    assert flood.killed_by == "workspace_quota", flood.summary()
    assert "20,000" in (flood.workspace_note or "")
    _, entries = usage(ws)
    assert entries <= 20_000
    started = time.monotonic()
    later = run(box, ["sh", "-c", "echo ok"], ws)
    later_s = time.monotonic() - started
    dirs = py(box, "import os\nfor i in range(30_000):\n    os.mkdir(f'd{i}')", ws)
    assert dirs.killed_by == "workspace_quota" and usage(ws)[1] <= 20_000
    wipe = run(box, ["sh", "-c", "rm -rf m d* && echo clean"], ws)
    figure(
        f"sandbox file flood (100k files, 30k dirs): capped at {entries} entries; a later run "
        f"{later_s:.2f}s (empty workspace {min(quick):.2f}s)"
    )
    assert later.ok and later_s < 1.0, later_s
    assert wipe.ok and usage(ws)[1] == 0


DEEP = "import os\nfor i in range({n}):\n    os.mkdir('{name}'); os.chdir('{name}')\n{tail}"


@pytest.mark.slow
def test_deep_trees_break_nothing_and_can_be_cleaned(
    box: BubblewrapSandbox, ws: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("untouched")
    cases = {
        "1200 deep": DEEP.format(n=1200, name="d", tail=""),
        "255-char names": DEEP.format(n=300, name="n" * 255, tail=""),
        "deep then a link out": DEEP.format(n=100, name="e", tail=f"os.symlink('{outside}', 'l')"),
        "file at the bottom": DEEP.format(n=500, name="f", tail="open('x', 'w').write('y')"),
        "1100 deep, there before the run": "print('a run')",
    }
    held = 0
    for name, script in cases.items():
        if "before" in name:  # left by an earlier run (before the tree was pruned)
            deep_tree(ws / "old", 1100, owner=65534 if os.geteuid() == 0 else None)
        made = py(box, script, ws)
        assert made.ok, (name, made.stderr)
        assert made.workspace_note and f"more than {MAX_DEPTH} levels" in made.workspace_note
        if "before" not in name:  # what the run nested too deep is removed after it
            assert "were removed" in made.workspace_note and scan(ws).complete, name
        later = py(box, "print('still fine')", ws)
        assert later.ok and later.stdout == "still fine\n", (name, later.summary())
        if os.geteuid() == 0:
            give_to(ws, 65534, 65534)  # the host-side walk, directly
        cleaned = run(box, ["sh", "-c", "rm -rf -- * && echo clean"], ws)
        held += cleaned.ok and not any(ws.iterdir())
    assert (outside / "victim.txt").read_text() == "untouched"
    assert outside.stat().st_uid == os.geteuid()
    figure(f"sandbox deep trees: {len(cases)} shapes, later runs fine and cleaned: {held}")
    assert held == len(cases)


@pytest.mark.slow
def test_bytes_hidden_below_the_walk_are_still_counted(box: BubblewrapSandbox, ws: Path) -> None:
    limits = Limits(max_file_mb=4, max_workspace_mb=16, wall_seconds=30)
    hide = DEEP.format(
        n=MAX_DEPTH + 5,
        name="h",
        tail="for i in range(24):\n    open(f'b{i}', 'wb').write(b'z' * 4_000_000)",
    )
    result = py(box, hide, ws, limits=limits)
    used, _ = usage(ws)
    figure(f"sandbox quota, bytes below the walk: {used / MIB:.1f} MB left of 91.6 written")
    assert result.workspace_note and "were removed" in result.workspace_note, result.summary()
    assert used <= 16 * MIB


def deep_tree(root: Path, depth: int, owner: int | None = None) -> None:
    """``root/d/d/...`` ``depth`` levels deep, made level by level (no path gets long);
    ``owner`` (as root) owns every level, as if the sandbox uid had made it."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        if owner is not None:
            os.fchown(fd, owner, owner)
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_walks_are_iterative_and_bounded(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    root = tmp_path / "t"
    deep_tree(root, 1100)
    request.addfinalizer(lambda: subprocess.run(["rm", "-rf", str(root)], check=True))
    seen = scan(root)
    assert seen.too_deep and seen.entries == MAX_DEPTH and not seen.capped
    wide = tmp_path / "w"
    wide.mkdir()
    for i in range(300):
        (wide / str(i)).touch()
    capped = scan(wide, max_entries=100)
    assert capped.capped and capped.entries == 100
    if os.geteuid() == 0:
        assert give_to(root, 65534, 65534) == MAX_DEPTH + 1  # no RecursionError
