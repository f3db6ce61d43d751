"""A client for kestrel's API socket, for the API conformance suite (tests/api/run-api-tests)
and the kvm suite's API cases (tests/kvm/kvm_api_case.py): HTTP/1.1 over AF_UNIX with the
standard library only (http.client, socket), plus a kestrel process that serves it.

Every answer is checked against the API's contract as it is read: 204 with no body, 200 with
a JSON body, 400 with {"fault_message": str, "fault_kind": "BadRequest"|"NotAllowed"|
"HostFailure"} (vmm/api/api_request.cpp: fault()).
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time


class ProtocolError(Exception):
    """An answer that breaks the API's contract, whatever the test expected."""


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Answer:
    def __init__(self, status, ctype, raw):
        self.status, self.ctype, self.raw = status, ctype, raw
        self.json = None
        if status in (200, 400) and ctype.startswith("application/json"):
            try:
                self.json = json.loads(raw)
            except ValueError as e:
                raise ProtocolError(f"status {status}: body is not JSON ({e}): {raw[:200]!r}")

    @property
    def fault(self):
        return self.json.get("fault_message", "") if isinstance(self.json, dict) else ""

    @property
    def kind(self):
        return self.json.get("fault_kind", "") if isinstance(self.json, dict) else ""

    def __repr__(self):
        return f"{self.status} {self.raw[:300]!r}"


def check_contract(a):
    """Raises ProtocolError when `a` is not one of the three shapes every answer takes."""
    if a.status == 204:
        if a.raw:
            raise ProtocolError(f"204 with a body: {a.raw[:200]!r}")
    elif a.status == 400:
        if not a.ctype.startswith("application/json") or not isinstance(a.json, dict):
            raise ProtocolError(f"400 without a JSON fault object (content type {a.ctype!r}): {a.raw[:200]!r}")
        if set(a.json) != {"fault_message", "fault_kind"} or not isinstance(a.json["fault_message"], str) \
                or not a.json["fault_message"]:
            raise ProtocolError(f"400 body is not {{fault_message, fault_kind}}: {a.raw[:200]!r}")
        if a.json["fault_kind"] not in ("BadRequest", "NotAllowed", "HostFailure"):
            raise ProtocolError(f"unknown fault_kind {a.json['fault_kind']!r}")
    elif a.status == 200:
        if not a.raw:
            raise ProtocolError("200 with no body")
    else:
        raise ProtocolError(f"status {a.status} (the API answers 200, 204 or 400): {a.raw[:200]!r}")


class Api:
    """Requests on one kestrel's socket; each on a fresh connection unless `conn` is given."""

    def __init__(self, path):
        self.path = path

    def request(self, method, url, body=None, raw=None, headers=None, conn=None):
        """body: an object sent as JSON; raw: bytes or str sent as they are."""
        c = conn or UnixHTTPConnection(self.path)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body))
            h = {"Content-Type": "application/json", "Accept": "application/json"} if data is not None else {}
            h.update(headers or {})
            c.request(method, url, body=data, headers=h)
            r = c.getresponse()
            a = Answer(r.status, r.getheader("Content-Type", ""), r.read().decode(errors="replace"))
        finally:
            if conn is None:
                c.close()
        check_contract(a)
        return a

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def put(self, url, body=None, **kw):
        return self.request("PUT", url, body, **kw)

    def patch(self, url, body=None, **kw):
        return self.request("PATCH", url, body, **kw)

    def action(self, action_type):
        return self.put("/actions", {"action_type": action_type})

    def raw_exchange(self, data, timeout=15.0):
        """Sends bytes as they are on a new connection (a request line of our own, a header
        it lacks) and returns what came back: one whole answer (headers and Content-Length
        bytes of body), or everything until the server closed or `timeout` passed."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.path)
            try:
                s.sendall(data)
            except BrokenPipeError:
                pass  # the server answered and closed before taking all of it
            out = b""
            try:
                while chunk := s.recv(65536):
                    out += chunk
                    if answer_complete(out):
                        break
            except (socket.timeout, ConnectionResetError):
                pass
        return out


def answer_complete(data):
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    return len(rest) >= parse_raw_answer(data)[3]


def parse_raw_answer(data):
    """(status, headers dict, body bytes, Content-Length) of the first HTTP answer in `data`."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0") or 0)
    return status, headers, rest[:n], n


class Kestrel:
    """`kestrel run --api-sock SOCK ARGS...` (no --api-sock when sock is None); ready once
    GET / answers. Its stdout (the guest's serial output) and stderr are read as they come
    (wait_for_output); stop() sends a signal and returns the exit code."""

    def __init__(self, binary, sock, *args, env=None, pass_fds=()):
        self.sock = sock
        self.api = Api(sock)
        self.cmd = [binary, "run", "--api-sock", sock, *args] if sock else [binary, "run", *args]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, pass_fds=pass_fds)
        self._out, self._err = bytearray(), bytearray()
        self._pumps = [threading.Thread(target=self._pump, args=(self.proc.stdout, self._out), daemon=True),
                       threading.Thread(target=self._pump, args=(self.proc.stderr, self._err), daemon=True)]
        for t in self._pumps:
            t.start()

    @staticmethod
    def _pump(stream, into):
        for chunk in iter(lambda: stream.read1(65536), b""):
            into += chunk

    @property
    def out(self):
        return bytes(self._out)

    @property
    def err(self):
        return bytes(self._err)

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.collect()
                raise RuntimeError(f"kestrel ended with {self.proc.returncode} before serving: "
                                   f"{self.stderr_text().strip()[-300:]}")
            try:
                if self.api.get("/").status == 200:
                    return self
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"kestrel did not answer on {self.sock} within {timeout} s")

    def wait_for_output(self, needle, timeout):
        """True once the guest's serial output (kestrel's stdout) contains `needle`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self._out:
                return True
            if self.proc.poll() is not None:
                self.collect()
                return needle in self._out
            time.sleep(0.02)
        return False

    def collect(self, timeout=10.0):
        """Waits for the process to end (killing it after `timeout`) and for its output."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for t in self._pumps:
            t.join(timeout=5)
        return self.out, self.err

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signals kestrel (if it still runs) and returns (exit code, seconds to exit)."""
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.collect(timeout)
        return self.proc.returncode, time.monotonic() - start

    def stderr_text(self):
        return self.err.decode(errors="replace")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
        self.collect()


def kvm_usable():
    """None when /dev/kvm opens read-write, else why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return str(e)
    os.close(fd)
    return None
