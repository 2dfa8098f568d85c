"""A stand-in for the ligerd binary in CPU tests: serves grpc.health.v1.Health/Check on --socket.

FAKE_LIGERD_MODE: serving (default) | not_serving | exit (exit 3 at once, printing a message) |
silent (never opens the socket) | slow (opens the socket after FAKE_LIGERD_DELAY seconds)."""

import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

from ligerd import _health


def main() -> int:
    socket_path = None
    for a in sys.argv[1:]:
        if a.startswith("--socket="):
            socket_path = a.split("=", 1)[1]
    mode = os.environ.get("FAKE_LIGERD_MODE", "serving")
    print(f"fake ligerd: mode={mode} socket={socket_path} args={sys.argv[1:]}", flush=True)
    if mode == "exit":
        print("fake ligerd: cannot open the GPU (pretend)", flush=True)
        return 3
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if mode == "silent":
        stop.wait(60)
        return 0
    if mode == "slow":
        time.sleep(float(os.environ.get("FAKE_LIGERD_DELAY", "5")))
    status = _health.NOT_SERVING if mode == "not_serving" else _health.SERVING

    def check(request, context):
        return status

    handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=_health.decode_request,
            response_serializer=_health.encode_response)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("unix://" + socket_path)
    server.start()
    stop.wait(60)
    server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
