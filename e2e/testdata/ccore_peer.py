#!/usr/bin/python3
"""gRPC C-core peer (Debian's python3-grpcio) for sextant's end-to-end tests.

Roles, chosen by the first argument:
  server          serve sextant.e2e.Echo on 127.0.0.1:<free port>, print
                  "ADDR host:port", stop when stdin closes.
  client ADDR     call every method of the service on ADDR, print
                  "RESULT [calls]" (JSON, the fields of e2e's grpcCall).

The service has generic handlers with raw bytes (no code generation, no
protobuf): the request text says what the server answers, so the test can
predict every field of every flow. Its Go twin is e2e/rawgrpc_test.go.
  Unary   "size|padding"   -> size bytes
  Fail    "code|message"   -> status code with message, no response message
  Stream  "n|size"         -> n messages of size*(i+1) bytes
  Slow    "ms"             -> sleeps ms, then an empty message
"""
import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "sextant.e2e.Echo"


def unary(req, ctx):
    size = int(req.split(b"|", 1)[0])
    return b"r" * size


def fail(req, ctx):
    code, msg = req.split(b"|", 1)
    status = next(s for s in grpc.StatusCode if s.value[0] == int(code))
    ctx.abort(status, msg.decode())


def stream(req, ctx):
    n, size = (int(x) for x in req.split(b"|", 1))
    for i in range(n):
        yield b"s" * (size * (i + 1))


def slow(req, ctx):
    deadline = time.monotonic() + int(req) / 1000
    while time.monotonic() < deadline and ctx.is_active():
        time.sleep(0.01)
    return b""


def serve():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("ADDR 127.0.0.1:%d" % port, flush=True)
    sys.stdin.read()  # until the test closes our stdin
    server.stop(grace=None)


def framed(msg):
    return 5 + len(msg)


def client(addr, rounds):
    calls = []
    with grpc.insecure_channel(addr) as ch:
        def method(name, kind=ch.unary_unary):
            return kind("/%s/%s" % (SERVICE, name))
        unary_call = method("Unary")
        for r in range(rounds):
            for i in range(10):
                req = b"%d|%s" % (10 * i + r, b"p" * (7 * i))
                resp = unary_call(req)
                calls.append(dict(Method="Unary", ReqBytes=framed(req), RespBytes=framed(resp), ReqMsgs=1, RespMsgs=1))

            for code, msg in ((5, "e2e: no such thing"), (3, "e2e: bad argument %d" % r), (13, "")):
                req = b"%d|%s" % (code, msg.encode())
                try:
                    method("Fail")(req)
                    raise SystemExit("Fail returned OK")
                except grpc.RpcError as e:
                    if e.code().value[0] != code or (e.details() or "") != msg:
                        raise SystemExit("Fail: got %s %r, want %d %r" % (e.code(), e.details(), code, msg))
                calls.append(dict(Method="Fail", ReqBytes=framed(req), ReqMsgs=1, Code=code, Message=msg))

            req = b"5|%d" % (100 + r)
            c = dict(Method="Stream", ReqBytes=framed(req), ReqMsgs=1, RespBytes=0, RespMsgs=0)
            for resp in method("Stream", ch.unary_stream)(req):
                c["RespBytes"] += framed(resp)
                c["RespMsgs"] += 1
            if c["RespMsgs"] != 5:
                raise SystemExit("Stream: %d messages, want 5" % c["RespMsgs"])
            calls.append(c)

            req = b"3000"
            try:
                method("Slow")(req, timeout=0.3)
                raise SystemExit("Slow returned before its deadline")
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise SystemExit("Slow: got %s, want DEADLINE_EXCEEDED" % e.code())
            calls.append(dict(Method="Slow", ReqBytes=framed(req), ReqMsgs=1, Code=4, Deadline=True))

        # One more call: C-core writes a cancelled call's RST_STREAM before
        # later frames, so once this is answered the reset is on the wire,
        # not lost to the channel's shutdown that follows.
        req = b"1|last"
        resp = unary_call(req)
        calls.append(dict(Method="Unary", ReqBytes=framed(req), RespBytes=framed(resp), ReqMsgs=1, RespMsgs=1))
    print("RESULT " + json.dumps(calls), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    elif sys.argv[1] == "client":
        client(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    else:
        raise SystemExit("unknown role %r" % sys.argv[1])
