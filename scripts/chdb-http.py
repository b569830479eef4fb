#!/usr/bin/env python3
"""The ClickHouse HTTP interface over chDB, the current ClickHouse engine in-process.

Debian's ClickHouse is 18.16; no current ClickHouse server can be installed on the
machines the tests run on, but PyPI's `chdb-core` is the current ClickHouse engine (its
version is the ClickHouse release it is built from) run as a library. This script serves
the part of ClickHouse's HTTP interface the `clickhouse` crate speaks, so the scale-out
tests run the same schema and queries against the current engine as against 18.16:

    POST /?database=D&query=INSERT INTO t(cols) FORMAT RowBinary   body: the rows
    POST /?database=D&default_format=RowBinary                     body: the SQL
    GET  /ping

Errors answer 500 with ClickHouse's exception text, as the server does. One chDB session
serves every request, one request at a time (chDB is one engine per process); the data
lives in the directory given. Loopback only.

    chdb-http.py DATA_DIR PORT_FILE    # writes the port it listens on to PORT_FILE
"""

import http.server
import os
import re
import sys
import threading
import urllib.parse

import chdb
from chdb import session as chs

INSERT = re.compile(r"^\s*(INSERT\s+INTO\s+.*?)\s+FORMAT\s+(\w+)\s*$", re.I | re.S)
# A trailing FORMAT clause in the SQL itself wins over `default_format`, as in ClickHouse
# (the crate sends none; `curl` users of this server may).
FORMAT = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.I)
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sess = None

    def log_message(self, fmt, *args):  # quiet: the tests read their own output
        pass

    def answer(self, status, body, content_type="text/plain; charset=UTF-8"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-ClickHouse-Server-Display-Name", "chdb")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/ping"):
            self.answer(200, b"Ok.\n")
        else:
            self.do_POST(body=b"")

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self, body=None):
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        data = self.body() if body is None else body
        try:
            with LOCK:
                out = self.run(params, data)
            self.answer(200, out, "application/octet-stream")
        except Exception as e:  # chDB raises its exceptions with ClickHouse's text
            self.answer(500, f"Code: 1000. DB::Exception: {e}\n".encode())

    def run(self, params, data):
        sess = Handler.sess
        database = params.get("database")
        if database:
            sess.query(f"USE `{database}`")
        else:
            sess.query("USE default")
        query = params.get("query")
        if query is not None and INSERT.match(query):
            prefix, fmt = INSERT.match(query).groups()
            inserter = sess.send_insert(prefix, fmt)
            if data:
                inserter.append(data)
            inserter.finish()
            return b""
        sql = (query + "\n" if query else "") + data.decode()
        fmt = params.get("default_format", "TabSeparated")
        own = FORMAT.search(sql)
        if own:
            sql, fmt = sql[: own.start()], own.group(1)
        result = sess.query(sql, fmt)
        return result.bytes() if result is not None else b""


def main():
    data_dir, port_file = sys.argv[1], sys.argv[2]
    os.makedirs(data_dir, exist_ok=True)
    Handler.sess = chs.Session(data_dir)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    print(
        f"ClickHouse {chdb.engine_version} (chdb-core {chdb.__version__}) "
        f"on 127.0.0.1:{server.server_address[1]}",
        file=sys.stderr,
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
