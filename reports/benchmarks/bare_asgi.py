"""The HTTP floor: a bare ASGI app that reads the request body whole and answers a constant JSON body, for
serving_floor_ratio.py (run under uvicorn with uvloop and httptools, one worker, no access log)."""

BODY = b'{"labels":[1],"probabilities":[[0.0,1.0]],"classes":[0,1],"model":"const","ids":["0-0"]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":  # lifespan: accept startup and shutdown
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
