"""The guard server: one per worker process, it starts every program the runner
(``process.py``) runs, each under a guard of its own. Run as a script,
``python -I -S guard.py PARENT_PID SOCKET_FD``, with the standard library alone; Linux
only (``prctl``, pidfds), as the portal's workers are.

Why a server: a guard is a Python process, and a fresh interpreter costs 10 ms or so
before each command (seven in a sandbox provision). The server starts once; a guard
is a fork of it, which costs about a millisecond.

- The runner sends a request (JSON: the programs' argument lists and environments,
  the working directory, how to interrupt, the grace period) and four file
  descriptors (stdin, stdout, stderr, status) on a Unix socket, and gets back the
  guard's pid, which is also its process group id, and a pidfd of it.
- The server dies with the worker: its parent-death signal comes when the worker's
  thread that started it ends, which is when the worker dies. Each guard has its own
  parent-death signal on the server, so it learns of the worker's death at once too.
- A guard leads its own process group, so a stop reaches everything its programs
  started. On the worker's death it kills the whole group: at once when interrupts
  go to the group (a hook), or after interrupting the program and waiting out the
  grace period (Terraform first saves the state of what it created). It relays the
  programs' output, so their writes still succeed once nobody reads them. It writes
  each program's exit status to the status descriptor, then exits: the runner takes
  the end of that pipe as the guard's end.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import shutil
import signal
import socket
import sys
import threading
from types import FrameType
from typing import TypedDict

# A request's size limit: argument lists and environments, as JSON.
MAX_REQUEST_BYTES = 200_000
# The descriptors of a request, in order.
STDIN, STDOUT, STDERR, STATUS = range(4)
_PR_SET_PDEATHSIG = 1
# Whatever the programs left running may hold a relayed pipe open: not for long.
_PIPE_WAIT_AFTER_EXIT = 1.0


class ProgramRequest(TypedDict):
    argv: list[str]
    env: dict[str, str]


class Request(TypedDict):
    """What the runner sends, as JSON (its own code writes it: not validated again)."""

    programs: list[ProgramRequest]
    cwd: str  # absolute
    interrupt_group: bool  # a stop interrupts the whole group, or the programs alone
    grace_s: float


def ask_for_parent_death(*, parent: int) -> None:
    """SIGTERM to this process when ``parent`` dies; exit now if it already has."""
    _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl: nobody would tell us
        os._exit(1)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)  # loaded once by the server, not again in each guard


def serve(*, connection: socket.socket) -> None:
    """Start a guard for each request until the runner closes its end."""
    server = os.getpid()
    # A terminal's Ctrl-C is the worker's to handle; guards are reaped by the kernel (each
    # one's statuses come back on its status pipe).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(connection, MAX_REQUEST_BYTES, 4)
        except ConnectionError:
            return
        for fd in fds:
            # The guard's alone, no program's (recv_fds drops MSG_CMSG_CLOEXEC in 3.11).
            os.set_inheritable(fd, False)
        if not message:
            return  # the worker is gone, or done with us
        # The guard does not end before we hold its pidfd (the kernel reaps it at once):
        # it waits for the end of this pipe last thing.
        may_end, let_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            connection.close()
            os.close(let_end)
            _be_the_guard(request=message, fds=fds, server=server, may_end=may_end)
        os.close(may_end)
        for fd in fds:
            os.close(fd)
        # With it, the runner learns the guard has ended (and is reaped) and signals it,
        # free of pid reuse.
        pidfd = os.pidfd_open(pid)
        os.close(let_end)
        try:
            socket.send_fds(connection, [str(pid).encode()], [pidfd])
        except OSError:
            return  # the worker is gone
        finally:
            os.close(pidfd)


def _be_the_guard(*, request: bytes, fds: list[int], server: int, may_end: int) -> None:
    """The forked guard: run the request's programs, report, exit (never returns)."""
    status_fd = fds[STATUS]
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # we wait for our programs
        ask_for_parent_death(parent=server)
        codes = Guard(request=json.loads(request), fds=fds).run()
    except BaseException as exc:  # noqa: BLE001 - reported as the program's failure
        os.write(fds[STDERR], f"the guard failed: {exc}\n".encode())
        codes = [127]
    with contextlib.suppress(OSError):  # the worker that would read it is gone
        os.write(status_fd, " ".join(map(str, codes)).encode())
    os.read(may_end, 1)  # the server has our pidfd (at once, but we may have been quicker)
    os._exit(0)


class Guard:
    """One request's programs: a pipeline (one program is a pipeline of one)."""

    def __init__(self, *, request: Request, fds: list[int]) -> None:
        self.argvs = [program["argv"] for program in request["programs"]]
        self.envs = [program["env"] for program in request["programs"]]
        self.cwd = request["cwd"]
        self.to_group = request["interrupt_group"]
        self.grace = request["grace_s"]
        self.fds = fds
        self.pids: list[int] = []
        self.orphaned = False

    def run(self) -> list[int]:
        """Each program's exit status, in order (negative: the signal that ended it)."""
        os.chdir(self.cwd)
        signal.signal(signal.SIGTERM, self._kill_group if self.to_group else self._on_orphaned)
        # The programs write into pipes this guard relays, so that once the worker (the
        # reader of our output) is gone their writes still succeed while they save their
        # state. One pipe when stdout and stderr are one stream: the lines keep their order.
        out, err = os.fstat(self.fds[STDOUT]), os.fstat(self.fds[STDERR])
        same = (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)
        pipes = {STDOUT: os.pipe()} if same else {STDOUT: os.pipe(), STDERR: os.pipe()}
        holds = self._start_programs(pipes=pipes)
        relays = []
        for target, (read_end, write_end) in pipes.items():
            os.close(write_end)
            relay = threading.Thread(target=_relay, args=(read_end, self.fds[target]), daemon=True)
            relay.start()
            relays.append(relay)
        signal.signal(signal.SIGINT, self._interrupt)
        codes = self._wait(holds=holds)
        for relay in relays:
            relay.join(timeout=_PIPE_WAIT_AFTER_EXIT)
        if self.orphaned:
            self._kill_group()  # nobody waits for us: leave nothing of the group behind
        return codes

    def _start_programs(self, *, pipes: dict[int, tuple[int, int]]) -> dict[int, int]:
        """Start the pipeline; each link's write end kept, by the pid of its writer.

        We keep a copy of each link's write end, so a program sees the end of its input
        only once the program before it has succeeded: after a failure it is killed first
        (a COPY FROM STDIN that saw the end would commit the rows it got)."""
        stdin = self.fds[STDIN]
        stderr = pipes[STDERR if STDERR in pipes else STDOUT][1]
        holds: dict[int, int] = {}
        for index, (argv, env) in enumerate(zip(self.argvs, self.envs, strict=True)):
            last = index == len(self.argvs) - 1
            link_read, link_write = (-1, pipes[STDOUT][1]) if last else os.pipe()
            self.pids.append(
                _start(argv=argv, env=env, stdin=stdin, stdout=link_write, stderr=stderr)
            )
            if index:
                os.close(stdin)
            if not last:
                holds[self.pids[-1]] = link_write
            stdin = link_read
        return holds

    def _wait(self, *, holds: dict[int, int]) -> list[int]:
        codes: dict[int, int] = {}
        while len(codes) < len(self.pids):
            pid, status = os.wait()
            if pid not in self.pids:
                continue
            codes[pid] = os.waitstatus_to_exitcode(status)
            if codes[pid] != 0:
                # What the later programs read is incomplete: they must not finish with it.
                for later in self.pids[self.pids.index(pid) + 1 :]:
                    if later not in codes:
                        _signal(pid=later, signum=signal.SIGKILL)
            if pid in holds:
                os.close(holds.pop(pid))  # the next program may now see the end of its input
        return [codes[pid] for pid in self.pids]

    def _to_programs(self, signum: int) -> None:
        for pid in self.pids:
            _signal(pid=pid, signum=signum)

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self.to_group:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # not to ourselves again
            os.killpg(0, signal.SIGINT)
            signal.signal(signal.SIGINT, self._interrupt)
        else:
            self._to_programs(signal.SIGINT)

    def _on_orphaned(self, signum: int, frame: FrameType | None) -> None:
        # The worker died: interrupt the programs, kill the group if they outlast the grace.
        self.orphaned = True
        signal.signal(signal.SIGALRM, self._kill_group)
        signal.setitimer(signal.ITIMER_REAL, self.grace)
        self._to_programs(signal.SIGINT)

    def _kill_group(self, signum: int = 0, frame: FrameType | None = None) -> None:
        os.killpg(0, signal.SIGKILL)


# Ours, and Python's (SIGPIPE, SIGXFSZ ignored): a program gets the defaults.
_DEFAULT_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGALRM,
    signal.SIGPIPE,
    signal.SIGXFSZ,
)


def _start(*, argv: list[str], env: dict[str, str], stdin: int, stdout: int, stderr: int) -> int:
    """Start a program (posix_spawn: a fork of this process would cost milliseconds)."""
    # Found on the program's own PATH, as execvpe would (posix_spawnp would use ours).
    found = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH", os.defpath))
    try:
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        # Every other descriptor is close-on-exec (os.pipe, and the request's, made so).
        return os.posix_spawn(
            found,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, stdin, 0),
                (os.POSIX_SPAWN_DUP2, stdout, 1),
                (os.POSIX_SPAWN_DUP2, stderr, 2),
            ],
            setsigdef=_DEFAULT_SIGNALS,
        )
    except OSError as exc:
        message = f"cannot run {argv[0]}: {exc.strerror}\n".encode()
    # It fails as a program that cannot start does: a message, then exit status 127.
    pid = os.fork()
    if pid == 0:
        os.write(stderr, message)
        os._exit(127)
    return pid


def _relay(read_end: int, fd: int) -> None:
    reader_gone = False
    while chunk := os.read(read_end, 65536):
        view = memoryview(chunk)
        while view and not reader_gone:
            try:
                view = view[os.write(fd, view) :]
            except OSError:
                reader_gone = True  # keep reading, so the programs never block or break


def _signal(*, pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


if __name__ == "__main__":
    ask_for_parent_death(parent=int(sys.argv[1]))
    serve(connection=socket.socket(fileno=int(sys.argv[2])))
