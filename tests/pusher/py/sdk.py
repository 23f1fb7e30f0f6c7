"""Runs calls on the pinned Python server SDK (pusher 3.3.4) against a local Roomkeeper.

Usage: .venv/bin/python tests/pusher/py/sdk.py PORT [SECRET] < calls.json
calls.json is a JSON list of {"method": name, "args": [...], "kwargs": {...}}; the output is
one JSON list with, per call, {"ok": result} or {"error": exception class, "message": text}.
Calls run in order on one client, so a list of triggers is ordered as the SDK sends them.
"""
import json
import sys

import pusher

port = int(sys.argv[1])
secret = sys.argv[2] if len(sys.argv) > 2 else "roomkeeper-local-secret"
client = pusher.Pusher(app_id="1", key="roomkeeper-local-key", secret=secret,
                       host="127.0.0.1", port=port, ssl=False, timeout=10)

out = []
for call in json.load(sys.stdin):
    try:
        result = getattr(client, call["method"])(*call.get("args", []), **call.get("kwargs", {}))
        out.append({"ok": result})
    except Exception as e:  # reported to the Node test, which asserts on the class
        out.append({"error": type(e).__name__, "message": str(e)})
json.dump(out, sys.stdout, ensure_ascii=False)
