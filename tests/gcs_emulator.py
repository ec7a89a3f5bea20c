"""A local Cloud Storage for the gs:// tests: an emulator, and the TLS proxy TensorFlow needs.

    python tests/gcs_emulator.py --certificate_dir=DIR --bucket=NAME

serves, on 127.0.0.1 only, until it is killed:
- the `gcp-storage-emulator` package's server (GCS's JSON API) with the bucket NAME, in
  memory. TensorStore (the T5X reader, orbax's arrays) reaches it by its own setting,
  TENSORSTORE_GCS_HTTP_URL.
- a proxy for TensorFlow's GCS file system (tf.io.gfile, TensorBoard's event writer, orbax's
  directory operations through etils). Its endpoints are fixed in TensorFlow
  (https://www.googleapis.com and https://storage.googleapis.com), so it is sent here with
  HTTPS_PROXY: the proxy answers each CONNECT itself with a certificate for those two names,
  made in DIR and trusted through CURL_CA_BUNDLE, and forwards the requests inside to the
  emulator. Nothing ever leaves the machine, and no name is looked up in DNS.

It prints one line, `READY <emulator port> <proxy port>`, once both listen. `environment()`
gives the variables that point a job at them; `start()` runs the process for the tests and
returns an `Emulator`, which also reads and writes the bucket directly.
"""

import argparse
import http
import http.client
import http.server
import json
import os
import pathlib
import shutil
import socketserver
import ssl
import subprocess
import sys
import threading
import urllib.parse
import urllib.request

HOST = "127.0.0.1"
TENSORFLOW_HOSTS = ("www.googleapis.com", "storage.googleapis.com")
CERTIFICATE, KEY = "emulator-cert.pem", "emulator-key.pem"
# The tests talk to the emulator directly, past any proxy the machine may be set up with.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Headers that belong to one hop (the client's connection to the proxy), not the request.
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                "transfer-encoding", "te", "trailer", "upgrade", "expect", "content-length"}


class EmulatorUnavailable(RuntimeError):
  """The emulator cannot run here (package or openssl missing, or it did not start)."""


def make_certificate(directory: pathlib.Path) -> pathlib.Path:
  """A self-signed certificate (and key) for TENSORFLOW_HOSTS in `directory`; returns it."""
  if shutil.which("openssl") is None:
    raise EmulatorUnavailable("the openssl command is not installed")
  certificate = directory / CERTIFICATE
  names = ",".join(f"DNS:{host}" for host in TENSORFLOW_HOSTS)
  proc = subprocess.run(
      ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
       "-subj", f"/CN={TENSORFLOW_HOSTS[0]}", "-addext", f"subjectAltName={names}",
       "-addext", "basicConstraints=critical,CA:TRUE",
       "-keyout", str(directory / KEY), "-out", str(certificate)],
      capture_output=True, text=True, check=False)
  if proc.returncode:
    raise EmulatorUnavailable(f"openssl could not make a certificate: {proc.stderr[-500:]}")
  return certificate


def environment(emulator_port: int, proxy_port: int, certificate: pathlib.Path) -> dict:
  """The variables that send every library's gs:// requests to the emulator and the proxy."""
  return {
      # TensorStore (T5X checkpoints, orbax's arrays): the endpoint.
      "TENSORSTORE_GCS_HTTP_URL": f"http://{HOST}:{emulator_port}",
      # google-cloud-storage (orbax asks it whether a bucket has a hierarchical namespace).
      "STORAGE_EMULATOR_HOST": f"http://{HOST}:{emulator_port}",
      # TensorFlow: through the proxy, trusting its certificate; loopback itself unproxied.
      "HTTPS_PROXY": f"http://{HOST}:{proxy_port}",
      "https_proxy": f"http://{HOST}:{proxy_port}",
      "NO_PROXY": f"{HOST},localhost",
      "no_proxy": f"{HOST},localhost",
      "CURL_CA_BUNDLE": str(certificate),
      # Credentials: a fixed token for TensorFlow and TensorStore, and the GCE metadata server
      # on a closed loopback port, so that nothing looks further.
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
      "NO_GCE_CHECK": "true",
      "GCE_METADATA_HOST": f"{HOST}:1",
      "GCE_METADATA_ROOT": f"{HOST}:1",
  }


class Emulator:
  """A running `python tests/gcs_emulator.py` and what points a process at it."""

  def __init__(self, proc: subprocess.Popen, emulator_port: int, proxy_port: int,
               certificate: pathlib.Path, bucket: str):
    self.proc, self.bucket = proc, bucket
    self.emulator_port, self.proxy_port = emulator_port, proxy_port
    self.env = environment(emulator_port, proxy_port, certificate)

  @property
  def url(self) -> str:
    return f"http://{HOST}:{self.emulator_port}"

  def upload(self, name: str, data: bytes) -> None:
    """Writes the object `name` of the bucket (straight to the emulator, not through jobs)."""
    query = urllib.parse.urlencode({"uploadType": "media", "name": name})
    request = urllib.request.Request(
        f"{self.url}/upload/storage/v1/b/{self.bucket}/o?{query}", data=data, method="POST",
        headers={"Content-Type": "application/octet-stream"})
    with _OPENER.open(request, timeout=30) as response:
      response.read()

  def upload_tree(self, local: pathlib.Path, prefix: str) -> str:
    """Copies the files under the folder `local` to `prefix/...`; returns gs://bucket/prefix."""
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
      self.upload(f"{prefix}/{file.relative_to(local).as_posix()}", file.read_bytes())
    return f"gs://{self.bucket}/{prefix}"

  def names(self, prefix: str = "") -> list[str]:
    """The names of the bucket's objects under `prefix`, sorted."""
    names, token = [], None
    while True:
      query = {"prefix": prefix, **({"pageToken": token} if token else {})}
      url = f"{self.url}/storage/v1/b/{self.bucket}/o?{urllib.parse.urlencode(query)}"
      with _OPENER.open(url, timeout=30) as response:
        listing = json.loads(response.read())
      names += [item["name"] for item in listing.get("items", [])]
      token = listing.get("nextPageToken")
      if not token:
        return sorted(names)

  def download(self, name: str) -> bytes:
    url = (f"{self.url}/storage/v1/b/{self.bucket}/o/{urllib.parse.quote(name, safe='')}"
           "?alt=media")
    with _OPENER.open(url, timeout=30) as response:
      return response.read()

  def stop(self) -> None:
    _stop(self.proc)


def start(directory: pathlib.Path, bucket: str, timeout: float = 30) -> Emulator:
  """Starts the emulator and the proxy in a subprocess; raises EmulatorUnavailable."""
  try:
    import gcp_storage_emulator  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise EmulatorUnavailable("the gcp-storage-emulator package is not installed "
                              "(pip install -e '.[test]')") from None
  certificate = make_certificate(directory)
  with open(directory / "emulator.log", "w") as log:
    proc = subprocess.Popen(
        [sys.executable, __file__, f"--certificate_dir={directory}", f"--bucket={bucket}"],
        stdout=subprocess.PIPE, stderr=log, text=True)
  line = []
  reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
  reader.start()
  reader.join(timeout)
  if not line or not line[0].startswith("READY"):
    _stop(proc)
    log = (directory / "emulator.log").read_text()[-1000:]
    raise EmulatorUnavailable(f"the emulator did not start within {timeout:.0f}s: {log}")
  _, emulator_port, proxy_port = line[0].split()
  return Emulator(proc, int(emulator_port), int(proxy_port), certificate, bucket)


def _stop(proc: subprocess.Popen) -> None:
  if proc.poll() is None:
    proc.terminate()
    try:
      proc.wait(10)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


# ---- in the subprocess ----------------------------------------------------------------------

class _ProxyHandler(http.server.BaseHTTPRequestHandler):
  """CONNECT: terminate TLS here and serve the tunnel's requests; others: forward them."""

  protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` answered here
  emulator = ("", 0)
  tls: ssl.SSLContext = None

  def do_CONNECT(self):  # pylint: disable=invalid-name
    host = self.path.split(":")[0]
    if host not in TENSORFLOW_HOSTS:
      self.send_error(403, f"the emulator proxy only serves {TENSORFLOW_HOSTS}")
      return
    self.send_response(200, "Connection established")
    self.end_headers()
    self.close_connection = True
    try:
      tunnel = self.tls.wrap_socket(self.connection, server_side=True)
    except (ssl.SSLError, OSError):
      return
    type(self)(tunnel, self.client_address, self.server)  # serves until the client closes

  def _forward(self):
    length = int(self.headers.get("Content-Length") or 0)
    if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
      body = self._read_chunked()
    else:
      body = self.rfile.read(length)
    url = urllib.parse.urlsplit(self.path)
    target = url.path + (f"?{url.query}" if url.query else "")
    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
    headers["Content-Length"] = str(len(body))  # the emulator wants one, even for no body
    connection = http.client.HTTPConnection(*self.emulator, timeout=60)
    try:
      connection.request(self.command, target, body=body, headers=headers)
      response = connection.getresponse()
      data = response.read()
    except (OSError, http.client.HTTPException) as e:
      self.send_error(502, f"the emulator failed on {self.command} {target}: {e!r}")
      return
    finally:
      connection.close()
    self.send_response(response.status, response.reason)
    for key, value in response.getheaders():
      if key.lower() in _HOP_HEADERS:
        continue
      if key.lower() == "location":  # resumable uploads: stay on https, through the proxy
        value = value.replace("http://", "https://", 1)
      self.send_header(key, value)
    head = self.command == "HEAD"  # no body, but the length of the one a GET would get
    self.send_header("Content-Length",
                     response.getheader("Content-Length", "0") if head else str(len(data)))
    self.end_headers()
    if not head:
      self.wfile.write(data)

  def _read_chunked(self) -> bytes:
    chunks = []
    while True:
      size = int(self.rfile.readline().split(b";")[0], 16)
      if size == 0:
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
          pass
        return b"".join(chunks)
      chunks.append(self.rfile.read(size))
      self.rfile.readline()

  do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _forward

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    sys.stderr.write("proxy: " + (format % args) + "\n")


class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
  daemon_threads = True
  request_queue_size = 128


def _patch_emulator() -> None:
  """Closes the gaps between the emulator and real GCS that TensorFlow and TensorStore meet.

  - The upload of an empty object (TensorFlow's directory markers, empty files) fails: the
    missing body is read as None.
  - A download (`alt=media`) does not say the object's generation in `x-goog-generation`;
    TensorStore needs it for its conditional writes (orbax's OCDBT manifests).
  - A listing ignores `startOffset` and `endOffset` and so returns objects outside the range
    TensorStore asked for, whose names it then cuts wrongly (it aborts the process).
  - A listing of a missing bucket answers 404 without GCS's JSON error body.
  """
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top
  read_data = server._read_data  # pylint: disable=protected-access
  download, ls = objects.download, objects.ls

  def _read_data(request_handler, query):
    data = read_data(request_handler, query)
    if data is None and query.get("uploadType") == ["media"]:
      return b""
    return data

  def _download(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    if response.status in (http.HTTPStatus.OK, http.HTTPStatus.PARTIAL_CONTENT):
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj.get("metageneration", 1))

  def _ls(request, response, storage, *args, **kwargs):
    ls(request, response, storage, *args, **kwargs)
    if response.status == http.HTTPStatus.NOT_FOUND:
      response.json({"error": {"code": 404, "message": "The specified bucket does not exist.",
                               "errors": [{"reason": "notFound", "domain": "global"}]}})
      return
    start = request.query.get("startOffset", [""])[0]
    end = request.query.get("endOffset", [None])[0]
    if response.status == http.HTTPStatus.OK and (start or end):
      listing = json.loads(response._content)  # pylint: disable=protected-access
      listing["items"] = [item for item in listing.get("items") or []
                          if start <= item["name"] and (end is None or item["name"] < end)]
      response.json(listing)

  server._read_data = _read_data  # pylint: disable=protected-access
  for old, new in ((download, _download), (ls, _ls)):
    setattr(objects, old.__name__, new)  # for handlers that call it by name (get: alt=media)
    for _, handlers in server.HANDLERS:  # the routes, which hold the function itself
      for method, handler in handlers.items():
        if handler is old:
          handlers[method] = new
  socketserver.TCPServer.request_queue_size = 128  # its server: many clients connect at once


def _serve(certificate_dir: str, bucket: str) -> None:
  _patch_emulator()
  from gcp_storage_emulator.server import create_server  # pylint: disable=g-import-not-at-top
  emulator = create_server(HOST, 0, in_memory=True, default_bucket=bucket)
  emulator.start()
  tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  tls.load_cert_chain(os.path.join(certificate_dir, CERTIFICATE),
                      os.path.join(certificate_dir, KEY))
  _ProxyHandler.emulator = emulator._api._httpd.server_address  # pylint: disable=protected-access
  _ProxyHandler.tls = tls
  proxy = _ThreadingServer((HOST, 0), _ProxyHandler)
  print(f"READY {_ProxyHandler.emulator[1]} {proxy.server_address[1]}", flush=True)
  try:
    proxy.serve_forever()
  finally:
    emulator.stop()


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--certificate_dir", required=True)
  parser.add_argument("--bucket", required=True)
  args = parser.parse_args()
  _serve(args.certificate_dir, args.bucket)
