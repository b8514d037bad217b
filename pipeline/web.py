"""The npm folder of the WebGPU tools (:data:`WEB_DIR`) and ``mlc-mtp serve-web``: a package's
``webgpu`` library and weights served on the loopback interface with a small chat page that runs
them in the browser through WebLLM (``web/serve_web.mjs``, ``web/chat.html``).

Imports no TVM: serving is Node's work (``node`` and the npm packages of ``web/package.json``,
installed by ``scripts/setup_webgpu.sh``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from .errors import PipelineError
from .package.chat_config import RUNTIME_CONFIG, generation_defaults

WEB_ENV = "MLC_MTP_WEB_DIR"
CHECKOUT_WEB = Path(__file__).resolve().parents[1] / "web"  # web/ of a source checkout
SETUP_HINT = "run bash scripts/setup_webgpu.sh"
HOST = "127.0.0.1"  # serve-web answers on the loopback interface only


def web_dir(checkout: Path = CHECKOUT_WEB, prefix: str = sys.prefix) -> Path:
    """The npm folder (``package.json``, ``package-lock.json``, the ``.mjs`` runners, the chat page;
    esbuild, Dawn and WebLLM in its ``node_modules``): ``$MLC_MTP_WEB_DIR``, else ``web/`` of a
    source checkout (an editable install), else ``<prefix>/share/mlc-mtp/web`` where a wheel install
    puts those files (then ``npm ci --prefix`` that folder installs the packages)."""
    if os.environ.get(WEB_ENV):
        return Path(os.environ[WEB_ENV])
    return checkout if (checkout / "package.json").is_file() else Path(prefix) / "share" / "mlc-mtp" / "web"


WEB_DIR = web_dir()


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise PipelineError(f"{path.parent}: not a package built by mlc-mtp (no {path.name}), expected {what}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PipelineError(f"{path}: unreadable ({type(err).__name__}: {err})") from None


def chat_plan(package: str | Path) -> dict:
    """What ``web/serve_web.mjs`` serves for ``package``: ``{"package", "wasm", "model_id",
    "settings"}`` (absolute paths; ``settings``: the package's temperature, top_p and max_tokens,
    :func:`~pipeline.package.chat_config.generation_defaults`).

    Raises:
        PipelineError: ``package`` is not a package directory, or has no ``webgpu`` library
            (``model_lib.webgpu`` of its ``mlc-mtp-config.json``) or its file is missing.
    """
    package = Path(package).resolve()
    if not package.is_dir():
        raise PipelineError(f"{package}: no such package directory, expected a package built with --target webgpu")
    chat = _read_json(package / "mlc-chat-config.json", "a package directory")
    runtime = _read_json(package / RUNTIME_CONFIG, "a package directory")
    libs = runtime.get("model_lib", {})
    if "webgpu" not in libs:
        raise PipelineError(f"{package / RUNTIME_CONFIG}: model_lib has no webgpu library (has "
                            f"{sorted(libs)}), expected a package built with --target webgpu")
    wasm = package / libs["webgpu"]
    if not wasm.is_file():
        raise PipelineError(f"{wasm}: the package's webgpu library is missing, expected the .wasm that "
                            f"mlc-mtp build --target webgpu writes")
    settings = {k: v for k, v in generation_defaults(chat, runtime).items() if k != "stop"}
    return {"package": str(package), "wasm": str(wasm), "model_id": package.name, "settings": settings}


def _check_tools() -> str:
    """``node``'s path; raises PipelineError naming what is missing."""
    node = shutil.which("node")
    if node is None:
        raise PipelineError(f"node: not found, expected Node.js 20+ on PATH ({SETUP_HINT})")
    modules = WEB_DIR / "node_modules"
    absent = [m for m in ("@mlc-ai/web-llm", "esbuild") if not (modules / m).is_dir()]
    if absent:
        raise PipelineError(f"{modules}: npm packages {', '.join(absent)} not installed, expected them "
                            f"({SETUP_HINT}, or npm ci --prefix {WEB_DIR})")
    return node


def _bind(port: int) -> socket.socket:
    """A listening TCP socket on :data:`HOST`:``port`` (0: a free port), inherited by Node."""
    if not 0 <= port <= 65535:
        raise PipelineError(f"--port: {port}, expected 0-65535 (0: any free port)")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as err:
        sock.close()
        raise PipelineError(f"--port: {port} on {HOST}: {err.strerror or err}, expected a free port "
                            f"(--port 0: any free one)") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def serve_chat(package: str | Path, port: int = 8000, out: TextIO | None = None) -> None:
    """Serve ``package``'s ``webgpu`` library, weights and tokenizer with WebLLM's browser bundle
    and the chat page on ``http://127.0.0.1:PORT/`` until Node stops or Ctrl-C
    (``KeyboardInterrupt``, after stopping Node).  Prints the page's address to ``out`` (stdout)
    first.  Raises PipelineError for a bad package, a busy port or missing tools, before serving."""
    out = out or sys.stdout
    plan = chat_plan(package)
    sock = _bind(port)
    plan["fd"], port = sock.fileno(), sock.getsockname()[1]
    try:
        node = _check_tools()
        proc = subprocess.Popen([node, str(WEB_DIR / "serve_web.mjs"), json.dumps(plan)],
                                pass_fds=[sock.fileno()], stdin=subprocess.DEVNULL)
    finally:
        sock.close()  # Node holds its own copy
    try:
        print(f"Serving {plan['package']} (WebLLM chat page) at http://{HOST}:{port}/ "
              f"- open it in a browser with WebGPU; Ctrl-C stops.", file=out, flush=True)
        status = proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    if status != 0:
        raise PipelineError(f"{WEB_DIR / 'serve_web.mjs'}: the server stopped with exit status {status} "
                            f"(its error is above)")
