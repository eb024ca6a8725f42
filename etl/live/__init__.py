"""`follow-etl listen`: Tencent's follow callbacks received, checked and applied to the graph.

    settings    ListenSettings (the options, the token; checked once) and ListenReport
    callbacks   one request checked and parsed, pure: its changes, or the Rejection
    writer      the one writer thread: one batch, one transaction, told after COMMIT
    app         the ASGI app: POST callbacks, GET /healthz, GET /metrics
    asgi        the little of ASGI the app speaks
    metrics     the listener's own Prometheus registry
    server      uvicorn around the app: the socket, the signals, the graceful stop

Data flows one way: ``server -> app -> callbacks``, then ``app -> writer -> etl.store.live``;
the writer alone opens transactions, and the app answers 200 only once the writer says the
batch holding a callback's changes committed.
"""
