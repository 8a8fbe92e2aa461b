"""Every NATS header name voxbus puts on the wire (message bodies are in the other modules)."""

META = "Vox-Meta"
"""The JSON Struct of a message whose payload is raw bytes (audio frames, transcribe requests,
synthesize replies)."""

STATUS = "Vox-Status"
"""On a request's reply inbox: `accepted` or `working`; never part of the answer."""
ACCEPTED = "accepted"
WORKING = "working"
MANAGER = "Vox-Manager"
"""On `accepted`: the id of the manager that took the request. A conversation's next turn goes to
that manager's own subject ({p}.model.llm.generate.<id>), where its KV state is."""
QUEUE = "Vox-Queue"
"""In a `working` heartbeat: how many requests are ahead of this one in its model's queue."""

REQUEST_ID = "Vox-Request-Id"
"""The same on every retry of one call, so a manager joins a retry to the attempt it holds."""
DEADLINE = "Vox-Deadline"
"""Seconds the caller will still wait (relative: clocks differ between machines)."""

ERROR = "Nats-Service-Error"
ERROR_CODE = "Nats-Service-Error-Code"
"""The NATS micro error convention: the message and the numeric status of an error reply."""

MSG_ID = "Nats-Msg-Id"
"""JetStream's dedupe id: a retried publish with the same id within the duplicate window is stored once."""

HEADER_ROOM = 4096
"""Bytes of a message kept for its headers (Vox-Meta, NATS framing) when sizing payloads to the
server's max_payload."""
