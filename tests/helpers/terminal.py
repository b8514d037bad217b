"""Driving ``mlc-mtp`` as a user would: in a pseudo-terminal (the chat loop, Ctrl-C and Ctrl-D as
keys) or as a subprocess that gets SIGINT, with the forward passes slowed so that a reply is still
running when the key comes."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs ``mlc-mtp`` (argv[1:]) with every decode / verify pass slowed by DELAY seconds.
SLOW_CLI = """
import sys, time
from pipeline.runtime.engine import Engine
delay = float(sys.argv[1])
run_forward = Engine.run_forward
def slow(self, token_ids, function):
    if function != "prefill":
        time.sleep(delay)
    return run_forward(self, token_ids, function)
Engine.run_forward = slow
from pipeline.cli import main
sys.exit(main(sys.argv[2:]))
"""


def cli_env() -> dict[str, str]:
    """The environment of a child ``mlc-mtp``: this checkout first on the path, the test session's
    stage cache."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def slow_cli(args: list[str], delay: float) -> list[str]:
    """The command line of ``mlc-mtp args`` with forward passes slowed by ``delay`` seconds."""
    return [sys.executable, "-c", SLOW_CLI, str(delay), *args]


class Terminal:
    """A command in a pseudo-terminal: :meth:`send` types, :meth:`expect` waits for output."""

    def __init__(self, argv: list[str]):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            os.chdir(ROOT)
            os.execvpe(argv[0], argv, cli_env())
        self.output = ""
        self.seen = 0  # how far expect() has consumed the output
        self.status: int | None = None  # the exit status, once the child ended

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # the child closed the terminal
            return False
        self.output += data.decode(errors="replace").replace("\r\n", "\n")
        return bool(data)

    def expect(self, text: str, timeout: float = 60) -> str:
        """Wait for ``text`` after what earlier calls consumed; return the output up to its end."""
        deadline = time.monotonic() + timeout
        while text not in self.output[self.seen:]:
            if time.monotonic() > deadline or not self._read(max(0.0, deadline - time.monotonic())):
                if text in self.output[self.seen:]:
                    break
                raise AssertionError(f"{text!r} not seen; output so far:\n{self.output}")
        end = self.output.index(text, self.seen) + len(text)
        chunk, self.seen = self.output[self.seen:end], end
        return chunk

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float = 60) -> int:
        """The exit status, after reading what is left of the output."""
        deadline = time.monotonic() + timeout
        while self.status is None and time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            self._read(0.1)
            if pid:
                while self._read(0.1):
                    pass
                os.close(self.fd)
                self.status = os.waitstatus_to_exitcode(status)
        if self.status is None:
            self.close()
            raise AssertionError(f"still running after {timeout} s; output:\n{self.output}")
        return self.status

    def close(self) -> None:
        """End the child if it still runs (a failed test)."""
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self.fd)
            self.status = -signal.SIGKILL


def interrupt_when(argv: list[str], line: str, delay: float = 0.0, timeout: float = 300) -> tuple[int, str, str]:
    """Run ``argv``; ``delay`` seconds after ``line`` shows up in its stdout or stderr send SIGINT.
    Returns ``(exit status, stdout, stderr)``."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outputs: dict[int, bytes] = {proc.stdout.fileno(): b"", proc.stderr.fileno(): b""}  # type: ignore[union-attr]
    deadline, sent = time.monotonic() + timeout, None
    open_fds = set(outputs)
    while open_fds and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_fds), [], [], 0.1)
        for fd in ready:
            data = os.read(fd, 4096)
            if not data:
                open_fds.discard(fd)
            outputs[fd] += data
        if sent is None and any(line.encode() in data for data in outputs.values()):
            sent = time.monotonic() + delay
        if sent is not None and time.monotonic() >= sent and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            sent = float("inf")
    status = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    out, err = outputs[proc.stdout.fileno()], outputs[proc.stderr.fileno()]  # type: ignore[union-attr]
    return status, out.decode(), err.decode()
