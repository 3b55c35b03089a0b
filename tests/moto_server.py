"""moto server, one request at a time.

moto's DynamoDB is not thread-safe: TransactWriteItems deep-copies the table while another
request thread may be writing to it, and under a burst (200 simultaneous new alerts) moto
answers HTTP 500 "dictionary changed size during iteration", which real DynamoDB never does.
This runs the same application as `moto_server`, but lets one DynamoDB request into moto at a
time (connections are still accepted concurrently, and other services, SQS long polls among
them, are not held up), which is also how moto already treats transactions: serialised. Real AWS's conflicts (TransactionConflict, throttling) are produced
by the fault-injecting endpoint in tests/src/faulty.rs instead.

Usage: python moto_server.py HOST PORT
"""

import os
import sys
import threading

from werkzeug.serving import BaseWSGIServer, run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return app(environ, start_response)
        with lock:
            # Consume the whole response inside the lock: moto builds it lazily.
            return list(app(environ, start_response))

    # werkzeug listens with a backlog of 128; the intake suite's bursts open 200 connections at
    # once, and a connection dropped from a full backlog waits 1 s, then 3 s, to try again: past
    # the SDK's 3.1 s connect timeout (one such request failed with 503 in a full local run).
    BaseWSGIServer.request_queue_size = 1024
    run_simple(host, port, one_at_a_time, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
