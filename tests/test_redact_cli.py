"""A password in --tracking-uri, --storage or --data is shown nowhere: not in the one-line error the real CLI
prints when the endpoint is unreachable (a closed port) or refuses (a server that answers 401 or 500 to
everything and quotes the request's credentials back), not in the text of the library exception that
error quotes, and not in any file the run left (the MLflow store, the storage folder, the working folder).

Every run stops in the preflight, before Ray: these tests start no cluster.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SWEEP = "celeba_backbones"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once it is closed


class _Refuse(BaseHTTPRequestHandler):
    """Answers every request with `status`, its body quoting the request line and the decoded
    credentials, as a careless server may."""
    status = 500

    def _answer(self):
        auth = self.headers.get("Authorization", "")
        decoded = base64.b64decode(auth.split(" ", 1)[1]).decode(errors="replace") if auth.startswith("Basic ") else auth
        body = f"refused {self.command} http://{decoded}@{self.headers.get('Host')}{self.path} for {decoded}\n".encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_PATCH = _answer

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module", params=[401, 500])
def refusing_port(request):
    handler = type(f"Refuse{request.param}", (_Refuse,), {"status": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _cli(args: list[str], cwd: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    done = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    return done.returncode, done.stdout, done.stderr


def _assert_nowhere(password: str, folder: Path, *outputs: str) -> None:
    for text in outputs:
        assert password not in text, text
    for path in folder.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def _assert_one_line_error(code: int, out: str, err: str, names: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]  # MLflow's own INFO lines may come first
    assert code == 2 and "Traceback" not in out + err, out + err
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and names in errors[0], out + err


def _check_every_flag(port: int, tmp: Path) -> None:
    """One run per flag (each stops at that flag's check) and one `doctor` run of every check at once, in
    parallel, each in its own folder."""
    pw = {flag: f"{flag}-pw-{uuid.uuid4().hex[:8]}" for flag in ("tracking", "storage", "data")}
    endpoint = f"endpoint_override=127.0.0.1:{port}&scheme=http"
    tracking = f"http://alice:{pw['tracking']}@127.0.0.1:{port}"
    storage = f"s3://AKIDEXAMPLE:{pw['storage']}@bucket/runs?{endpoint}"
    data = f"s3://bucket/faces?access_key=AKIDEXAMPLE&secret_key={pw['data']}&{endpoint}"
    folders = {name: tmp / name for name in ("MLflow", "storage", "data", "doctor")}

    def good(name):  # a writable local MLflow store and storage folder
        return ["--tracking-uri", f"sqlite:///{folders[name]}/mlflow.db", "--storage", str(folders[name] / "runs")]

    sweep = ["sweep", SWEEP, "--smoke"]
    jobs = {  # name: (arguments, the passwords they hold, the word the error line names)
        "MLflow": (sweep + ["--tracking-uri", tracking], [pw["tracking"]], "MLflow"),
        "storage": (sweep + good("storage")[:2] + ["--storage", storage], [pw["storage"]], "storage"),
        "data": (sweep + good("data") + ["--data", data], [pw["data"]], "s3://bucket/faces"),
        # doctor runs every check; --address at a closed port keeps Ray from starting
        "doctor": (["doctor", SWEEP, "--smoke", "--tracking-uri", tracking, "--storage", storage,
                    "--data", f"https://bob:{pw['data']}@127.0.0.1:{port}/faces",
                    "--address", f"127.0.0.1:{_closed_port()}"], list(pw.values()), None),
    }
    for folder in folders.values():
        folder.mkdir()
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = dict(zip(jobs, pool.map(lambda name: _cli(jobs[name][0], folders[name]), jobs)))

    for name, (_, passwords, names) in jobs.items():
        code, out, err = results[name]
        if names:
            _assert_one_line_error(code, out, err, names)
        else:
            assert code == 2 and "Traceback" not in out + err, out + err
            for check in ("MLflow", "storage", "data"):
                assert any(line.startswith(f"✗ {check}: ") for line in out.splitlines()), out
        for password in passwords:
            _assert_nowhere(password, folders[name], out, err)


def test_no_password_shown_when_the_endpoints_are_unreachable(tmp_path):
    _check_every_flag(_closed_port(), tmp_path)


def test_no_password_shown_when_the_endpoints_refuse(refusing_port, tmp_path):
    _check_every_flag(refusing_port, tmp_path)
