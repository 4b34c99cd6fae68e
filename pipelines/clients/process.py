"""The one way the portal runs another program: hooks, Terraform, pg_dump and pg_restore,
and pipelines of programs (``pg_dump | pg_restore``, ``psql COPY TO | psql COPY FROM``).

- An argument list (never a shell string) and the environment the caller built: the
  child inherits nothing else from the worker. A pipeline's programs each get their
  own environment (two databases, two passwords) and are connected by pipes of
  their own, so the bytes they pass never cross this process.
- Output lines reach ``on_line`` in the caller's thread: reader threads only put
  lines on a queue, which the caller's thread drains (``on_line`` writes to the
  database, and a thread that never closes its connection must not do that). The
  caller blocks on that queue with a timeout; nothing sleeps to poll. ``on_idle`` is
  called, in that thread too, a tenth of a second after lines came, at every cancel
  check and after the last line: a caller that keeps lines writes each burst of output
  at once, still live.
- Stopping (a cancel, the timeout, an exception in the caller): SIGINT to the
  child's process group, ``grace_s`` seconds to exit, then SIGKILL of the group.
- The program runs under a small guard (``guard.py``) that leads its own process group
  (so a stop reaches everything the program started) and learns of the worker's death
  at once (Linux ``PR_SET_PDEATHSIG``, through the process's guard server); it then
  kills the whole group: a worker killed with SIGKILL takes its hook, and its
  children, with it at once, and ``terraform apply`` after an interrupt and ``grace_s``
  (so Terraform first saves the state of what it created). A guard is a fork of the
  guard server this process starts once, not a new interpreter before each command.
  ``on_start(pid)`` gives the caller the guard's pid, which is also the process
  group id, so a later attempt can check (or make sure) that the group is gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pipelines.clients import guard

DEFAULT_GRACE_SECONDS = 5.0
DEFAULT_POLL_SECONDS = 0.5
# After SIGKILL of the group, how long to wait for the pipes to close: something that
# left the group (a daemon that called setsid) may hold them open forever.
_PIPE_WAIT_AFTER_KILL = 5.0
# After the child exits, how long its last output may take to arrive before whatever
# it left running in its group (and holding the pipe) is killed.
_DRAIN_AFTER_EXIT = 1.0
# How long lines may wait for ``on_idle``: Terraform prints a line every millisecond or
# so; a tenth of a second of them is one write, and still shows live.
_IDLE_AFTER_SECONDS = 0.1

OnLine = Callable[[str], None]
ShouldCancel = Callable[[], bool]
OnStart = Callable[[int], None]
OnIdle = Callable[[], None]


def _never() -> bool:
    return False


def _identity(text: str) -> str:
    return text


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    # The last ``tail_size`` output lines, redacted (stderr only when stdout is captured).
    tail: list[str]
    # Whole stdout when ``capture_stdout`` (not redacted, not given to on_line); else b"".
    stdout: bytes = b""
    # Each program's exit status (a pipeline has several); empty if the guard was killed.
    returncodes: tuple[int, ...] = ()
    timed_out: bool = False
    cancelled: bool = False
    # The group had to be killed: it did not exit within the grace period.
    killed: bool = False
    # Seconds from the interrupt to the end, when the run was stopped.
    stop_seconds: float | None = None


class _Eof:
    """Put on the queue by a reader when its stream ends."""


class _Exited:
    """Put on the queue when the guard has ended (a thread waits for it: no polling)."""


_EOF = _Eof()
_EXITED = _Exited()


_GUARD_SCRIPT = Path(__file__).with_name("guard.py")


class _GuardServer:
    """This process's guard server (``guard.py``): started on first use, by a thread of
    its own that lives as long as the process, since the server's parent-death signal
    comes when the thread that started it ends. A fork of the worker gets its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: socket.socket | None = None
        self._gone = threading.Event()

    def start_guard(self, *, request: bytes, fds: Sequence[int]) -> tuple[int, int]:
        """Have the server start a guard for ``request``; the guard's pid and a pidfd."""
        if len(request) > guard.MAX_REQUEST_BYTES:
            raise ValueError(
                f"the command's arguments and environment take {len(request)} bytes; "
                f"the limit is {guard.MAX_REQUEST_BYTES}"
            )
        with self._lock:
            if self._connection is None or self._gone.is_set():
                self._launch()
            assert self._connection is not None
            try:
                socket.send_fds(self._connection, [request], fds)
                reply, pidfds, _, _ = socket.recv_fds(self._connection, 32, 1)
            except OSError as exc:
                self._forget()
                raise OSError(exc.errno, f"the guard server is gone: {exc.strerror}") from exc
            if not reply or len(pidfds) != 1:
                self._forget()
                raise OSError(errno.EPIPE, "the guard server ended before starting the program")
            os.set_inheritable(pidfds[0], False)  # recv_fds drops MSG_CMSG_CLOEXEC in 3.11
            return int(reply), pidfds[0]

    def _launch(self) -> None:
        self._forget()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        started: queue.Queue[BaseException | None] = queue.Queue()
        gone = threading.Event()
        keeper = threading.Thread(
            target=_keep_server,
            kwargs={"connection": theirs, "started": started, "gone": gone},
            name="portal-guard-server",
            daemon=True,
        )
        keeper.start()
        failure = started.get()
        theirs.close()
        if failure is not None:
            ours.close()
            raise failure
        self._connection, self._gone = ours, gone

    def _forget(self) -> None:
        if self._connection is not None:
            self._connection.close()  # the server sees the end and exits
            self._connection = None

    def after_fork(self) -> None:
        """In a forked child: the parent's server is not ours (nor its lock's state)."""
        self._lock = threading.Lock()
        self._forget()


def _keep_server(
    *, connection: socket.socket, started: queue.Queue[BaseException | None], gone: threading.Event
) -> None:
    """Start the server and wait for it (the thread's life is its parent-death signal)."""
    parent = str(os.getpid())
    try:
        # -I -S: no environment variables, user site or site module: a clean start.
        server = subprocess.Popen(
            [sys.executable, "-I", "-S", str(_GUARD_SCRIPT), parent, str(connection.fileno())],
            env={},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            pass_fds=(connection.fileno(),),
            process_group=0,  # a terminal's Ctrl-C is for the worker, not for its guards
        )
    except BaseException as exc:  # noqa: BLE001 - handed to the thread that asked
        started.put(exc)
        return
    started.put(None)
    server.wait()
    gone.set()


_SERVER = _GuardServer()
os.register_at_fork(after_in_child=_SERVER.after_fork)


def _check_program(*, program: str, cwd: Path, env: Mapping[str, str]) -> None:
    """Raise OSError now, as Popen would, when ``program`` cannot be run."""
    if "/" in program:
        path = Path(program) if Path(program).is_absolute() else Path(cwd) / program
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


@dataclass(frozen=True)
class Program:
    """One program of a pipeline: its argument list and its whole environment."""

    argv: Sequence[str]
    env: Mapping[str, str] = field(repr=False)  # may carry a password: never printed


def run_process(
    *,
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float | None = None,
    on_line: OnLine | None = None,
    should_cancel: ShouldCancel = _never,
    on_start: OnStart | None = None,
    on_idle: OnIdle | None = None,
    stdin_data: bytes | None = None,
    capture_stdout: bool = False,
    grace_s: float = DEFAULT_GRACE_SECONDS,
    poll_s: float = DEFAULT_POLL_SECONDS,
    redact: Callable[[str], str] = _identity,
    tail_size: int = 20,
    interrupt_group: bool = True,
) -> ProcessResult:
    """Run ``argv`` to its end, streaming each (redacted) output line to ``on_line``.

    stdout and stderr are one stream unless ``capture_stdout``: then stdout is kept
    whole in the result and only stderr is streamed. ``should_cancel`` is asked every
    ``poll_s`` seconds. A stop interrupts the whole process group, or only the program
    when ``interrupt_group`` is false (Terraform, which stops its children itself).
    Raises ``OSError`` when the program cannot be started; an exception raised by
    ``on_line``, ``on_idle`` or ``on_start`` stops the process, then propagates.
    """
    return run_pipeline(
        programs=[Program(argv=argv, env=env)],
        cwd=cwd,
        timeout_s=timeout_s,
        on_line=on_line,
        should_cancel=should_cancel,
        on_start=on_start,
        on_idle=on_idle,
        stdin_data=stdin_data,
        capture_stdout=capture_stdout,
        grace_s=grace_s,
        poll_s=poll_s,
        redact=redact,
        tail_size=tail_size,
        interrupt_group=interrupt_group,
    )


def run_pipeline(
    *,
    programs: Sequence[Program],
    cwd: Path,
    timeout_s: float | None = None,
    on_line: OnLine | None = None,
    should_cancel: ShouldCancel = _never,
    on_start: OnStart | None = None,
    on_idle: OnIdle | None = None,
    stdin_data: bytes | None = None,
    capture_stdout: bool = False,
    grace_s: float = DEFAULT_GRACE_SECONDS,
    poll_s: float = DEFAULT_POLL_SECONDS,
    redact: Callable[[str], str] = _identity,
    tail_size: int = 20,
    interrupt_group: bool = True,
) -> ProcessResult:
    """Run ``programs`` as a pipeline, as ``run_process`` runs one program: each one's
    stdout is the next one's stdin (the bytes go from program to program, never
    through this process); ``stdin_data`` goes to the first, the last one's stdout and
    every program's stderr are the output. All of them share one guard, process
    group, stop, timeout and parent-death; ``result.returncodes`` has each one's exit
    status and ``returncode`` the last non-zero of them. A program sees the end of its
    input only once the one before it has succeeded: when one fails, the programs after
    it are killed first (what they read is incomplete, and must not be taken as whole).
    """
    if not programs:
        raise ValueError("a pipeline needs at least one program")
    for program in programs:
        _check_program(program=program.argv[0], cwd=cwd, env=program.env)
    # Relative to our working directory now, as Popen's would be (the guard starts elsewhere).
    directory = os.path.abspath(cwd)
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(cwd))
    request = json.dumps(
        {
            "programs": [{"argv": list(p.argv), "env": dict(p.env)} for p in programs],
            "cwd": directory,
            "interrupt_group": interrupt_group,
            "grace_s": grace_s,
        }
    ).encode()
    pipes = _Pipes.open(stdin=stdin_data is not None, capture_stdout=capture_stdout)
    try:
        pid, pidfd = _SERVER.start_guard(request=request, fds=pipes.guards_ends())
    except BaseException:
        pipes.close_ours()
        raise
    finally:
        pipes.close_guards()
    run = _Run(
        pid=pid,
        pidfd=pidfd,
        pipes=pipes,
        redact=redact,
        on_line=on_line,
        on_idle=on_idle,
        should_cancel=should_cancel,
        grace_s=grace_s,
        poll_s=poll_s,
        tail_size=tail_size,
    )
    run.start_readers()
    finished = False
    try:
        if on_start is not None:
            on_start(pid)
        if stdin_data is not None:
            run.feed(stdin_data)
        run.pump(deadline=None if timeout_s is None else time.monotonic() + timeout_s)
        finished = True
    finally:
        if not finished:
            # on_line raised, or the caller itself was interrupted: never leave the
            # child running unattended; give it the same graceful stop as a cancel.
            run.stop_now()
        run.finish(deliver=finished)
    return run.result()


@dataclass
class _Pipes:
    """The pipes between this process and a guard: our ends, and the guard's, which it
    gets in its request (ours closed once sent) in the order ``guard.STDIN``...``STATUS``."""

    stdin: int  # the guard's: a pipe's read end, or /dev/null
    feed: int | None  # ours: where ``stdin_data`` goes
    stdout: IO[bytes]
    stdout_end: int
    stderr: IO[bytes] | None  # ours when stderr is captured apart; else it goes with stdout
    stderr_end: int
    status: IO[bytes]  # the guard writes each program's exit status here, then exits
    status_end: int

    @classmethod
    def open(cls, *, stdin: bool, capture_stdout: bool) -> _Pipes:
        stdin_end, feed = os.pipe() if stdin else (os.open(os.devnull, os.O_RDONLY), None)
        stdout, stdout_end = os.pipe()
        stderr, stderr_end = os.pipe() if capture_stdout else (None, stdout_end)
        status, status_end = os.pipe()
        return cls(
            stdin=stdin_end,
            feed=feed,
            stdout=os.fdopen(stdout, "rb"),
            stdout_end=stdout_end,
            stderr=None if stderr is None else os.fdopen(stderr, "rb"),
            stderr_end=stderr_end,
            status=os.fdopen(status, "rb"),
            status_end=status_end,
        )

    def guards_ends(self) -> list[int]:
        return [self.stdin, self.stdout_end, self.stderr_end, self.status_end]

    def close_guards(self) -> None:
        for fd in {self.stdin, self.stdout_end, self.stderr_end, self.status_end}:
            os.close(fd)

    def close_ours(self) -> None:
        if self.feed is not None:
            os.close(self.feed)
        for stream in (self.stdout, self.stderr, self.status):
            if stream is not None:
                stream.close()


class _Run:
    """The state of one running child: its queue of lines, its stop, its result."""

    def __init__(
        self,
        *,
        pid: int,
        pidfd: int,
        pipes: _Pipes,
        redact: Callable[[str], str],
        on_line: OnLine | None,
        on_idle: OnIdle | None,
        should_cancel: ShouldCancel,
        grace_s: float,
        poll_s: float,
        tail_size: int,
    ) -> None:
        self.pid = pid  # the guard's, which leads the programs' process group
        self.pidfd = pidfd  # the guard's, closed by finish()
        self.pipes = pipes
        self.status_parts: list[bytes] = []
        self.guard_ended = threading.Event()  # its status pipe closed: it has exited
        self.redact = redact
        self.on_line = on_line
        self.on_idle = on_idle
        self.idle_due: float | None = None  # lines came: on_idle is due then
        self.should_cancel = should_cancel
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.tail: deque[str] = deque(maxlen=tail_size)
        self.lines: queue.Queue[str | _Eof | _Exited] = queue.Queue()
        self.stdout_parts: list[bytes] = []
        self.readers: list[threading.Thread] = []
        self.open_streams = 0
        self.interrupted_at: float | None = None
        self.killed_at: float | None = None
        self.ended_at: float | None = None
        self.exited_at: float | None = None  # the child itself ended, its output may not
        self.outlived_grace = False
        self.timed_out = False
        self.cancelled = False

    def feed(self, data: bytes) -> None:
        assert self.pipes.feed is not None
        stdin, self.pipes.feed = open(self.pipes.feed, "wb"), None  # noqa: SIM115
        # Closed after: the program sees the end. A child that died at once shows up as a
        # failed command, not as BrokenPipeError.
        with stdin, contextlib.suppress(BrokenPipeError):
            stdin.write(data)

    def start_readers(self) -> None:
        if self.pipes.stderr is not None:
            self._start(_pump_lines, stream=self.pipes.stderr, lines=self.lines)
            self._start(_read_all, stream=self.pipes.stdout, parts=self.stdout_parts)
        else:
            self._start(_pump_lines, stream=self.pipes.stdout, lines=self.lines)
        self.open_streams = 1
        self._start(self._read_status)

    def _read_status(self) -> None:
        _read_all(stream=self.pipes.status, parts=self.status_parts)
        select.select([self.pidfd], [], [])  # readable once the guard has ended, and is reaped
        self.guard_ended.set()
        self.lines.put(_EXITED)

    def _start(self, target: Callable[..., None], **kwargs: object) -> None:
        thread = threading.Thread(target=target, kwargs=kwargs, daemon=True)
        thread.start()
        self.readers.append(thread)

    def pump(self, *, deadline: float | None) -> None:
        """Deliver lines until the output ends and the child exits, stopping it when asked."""
        next_check = time.monotonic()
        while True:
            now = time.monotonic()
            if self.interrupted_at is None:
                if deadline is not None and now >= deadline:
                    self.timed_out = True
                    self._interrupt(now)
                elif now >= next_check:
                    next_check = now + self.poll_s
                    if self.should_cancel():
                        self.cancelled = True
                        self._interrupt(now)
                    # The caller's own lines kept before a quiet stretch show now too.
                    self._idle()
            elif self.killed_at is None and now >= self.interrupted_at + self.grace_s:
                self.outlived_grace = True
                self._kill(now)
            if self.exited_at is not None and self.open_streams == 0:
                return
            drained = self.exited_at is not None and now >= self.exited_at + _DRAIN_AFTER_EXIT
            if drained and self.killed_at is None:
                # The program ended; what it left behind holds the pipe open.
                self._kill(now)
            if self.killed_at is not None and now >= self.killed_at + _PIPE_WAIT_AFTER_KILL:
                return  # a process outside the group holds the pipe: stop waiting for it
            if self.idle_due is not None and now >= self.idle_due:
                self._idle()
            wait = self._wait_seconds(now=now, deadline=deadline, next_check=next_check)
            try:
                item = self.lines.get(timeout=wait)
            except queue.Empty:
                continue
            self._take(item, deliver=True)

    def _idle(self) -> None:
        self.idle_due = None
        if self.on_idle is not None:
            self.on_idle()

    def _wait_seconds(self, *, now: float, deadline: float | None, next_check: float) -> float:
        moments = [next_check if self.interrupted_at is None else now + self.poll_s]
        if self.interrupted_at is None and deadline is not None:
            moments.append(deadline)
        if self.interrupted_at is not None and self.killed_at is None:
            moments.append(self.interrupted_at + self.grace_s)
        if self.exited_at is not None and self.killed_at is None:
            moments.append(self.exited_at + _DRAIN_AFTER_EXIT)
        if self.idle_due is not None:
            moments.append(self.idle_due)
        return max(0.01, min(moments) - now)

    def _take(self, item: str | _Eof | _Exited, *, deliver: bool) -> None:
        if isinstance(item, _Eof):
            self.open_streams -= 1
            return
        if isinstance(item, _Exited):
            self.exited_at = time.monotonic()
            return
        line = self.redact(item)
        self.tail.append(line)
        if deliver and self.on_line is not None:
            self.on_line(line)
            if self.idle_due is None:
                self.idle_due = time.monotonic() + _IDLE_AFTER_SECONDS

    def _interrupt(self, now: float) -> None:
        self.interrupted_at = now
        if not self.guard_ended.is_set():  # to the guard, which passes it on (guard.py)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGINT)

    def _kill(self, now: float) -> None:
        self.killed_at = now
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        """Signal the guard's whole process group (it leads one)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def stop_now(self) -> None:
        """Interrupt, wait out the grace period, kill: for when the caller cannot go on."""
        if not self.guard_ended.is_set():
            self._interrupt(time.monotonic())
            try:
                if not self.guard_ended.wait(timeout=self.grace_s):
                    self.outlived_grace = True
                    self._kill(time.monotonic())
                    self.guard_ended.wait()
            except BaseException:  # a second Ctrl-C while it shuts down: stop it hard
                self._kill(time.monotonic())
                self.guard_ended.wait()
                raise

    def finish(self, *, deliver: bool) -> None:
        """Reap the child, kill what it left in its group, take the last lines."""
        # Only after a kill whose pipes stayed open does it still run; SIGKILL ends it soon.
        self.guard_ended.wait()
        self.ended_at = time.monotonic()
        # Leftovers, e.g. a provisioner's orphaned `sleep` or a hook's background job.
        self._signal_group(signal.SIGKILL)
        for reader in self.readers:
            reader.join(timeout=_PIPE_WAIT_AFTER_KILL)
        self.pipes.close_ours()
        os.close(self.pidfd)
        while True:
            try:
                item = self.lines.get_nowait()
            except queue.Empty:
                break
            self._take(item, deliver=deliver)
        if deliver and self.idle_due is not None:
            self._idle()

    def result(self) -> ProcessResult:
        stop_seconds = None
        if self.interrupted_at is not None and self.ended_at is not None:
            stop_seconds = self.ended_at - self.interrupted_at
        codes = tuple(int(code) for code in b"".join(self.status_parts).split())
        # Like a shell's pipefail; no status at all: the guard itself was killed.
        returncode = next((c for c in reversed(codes) if c != 0), 0) if codes else -signal.SIGKILL
        return ProcessResult(
            returncode=returncode,
            returncodes=codes,
            tail=list(self.tail),
            stdout=b"".join(self.stdout_parts),
            timed_out=self.timed_out,
            cancelled=self.cancelled,
            killed=self.outlived_grace,
            stop_seconds=stop_seconds,
        )


def _pump_lines(*, stream: IO[bytes], lines: queue.Queue[str | _Eof | _Exited]) -> None:
    try:
        for raw in iter(stream.readline, b""):
            lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
    except (OSError, ValueError):
        pass
    finally:
        lines.put(_EOF)


def _read_all(*, stream: IO[bytes], parts: list[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        parts.append(stream.read())
