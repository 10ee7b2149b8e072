#!/usr/bin/python3
"""HTTP/1.1 pipelining client for sextant's end-to-end tests.

  pipeline_client.py HOST PORT PATH...

Opens one keep-alive connection, sends every request with http.client
before reading any response, then reads the responses in order with
http.client's own parser and prints "RESULT [{Path, Status, Bytes}]" (JSON).
http.client refuses a second request while a response is outstanding and
gives every response its own buffered reader (the first would swallow the
others): the requests are sent with its state reset, and the responses
share one reader.
"""
import http.client
import json
import sys


class SharedReader:
    """One buffered reader for every response; closing a response keeps it."""

    def __init__(self, sock):
        self._fp = sock.makefile("rb")

    def makefile(self, mode):
        return self

    def close(self):
        pass

    def __getattr__(self, name):
        return getattr(self._fp, name)


def main():
    host, port, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.connect()
    for path in paths:
        conn.putrequest("GET", path)
        conn.endheaders()
        conn._HTTPConnection__state = http.client._CS_IDLE  # allow the next one
    reader = SharedReader(conn.sock)
    results = []
    for path in paths:
        resp = http.client.HTTPResponse(reader, method="GET")
        resp.begin()
        body = resp.read()
        if resp.will_close:
            raise SystemExit("%s: the server closes the connection" % path)
        results.append(dict(Path=path, Status=resp.status, Bytes=len(body)))
    conn.sock.close()
    print("RESULT " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
