"""A real FastAPI upstream for authgate's end-to-end tests.

Its own generated spec (GET /openapi.json) is what the gateway compiles: FastAPI writes
`anyOf: [{type: integer, ...}, {type: "null"}]` for every optional typed parameter. Every
handler answers with what FastAPI handed it, and keeps a copy for GET /__seen.
Runs on 127.0.0.1:<argv[1]>; exits when its stdin closes (the test that started it is gone).
"""

import os
import sys
import threading
from typing import List, Optional

import uvicorn
from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

app = FastAPI(title="things", version="1")
SEEN: List[dict] = []


def record(operation: str, **seen) -> dict:
    entry = {"operation": operation, **seen}
    SEEN.append(entry)
    return entry


class NewThing(BaseModel):
    name: str = Field(max_length=20)
    size: Optional[int] = Field(default=None, le=10)


@app.get("/__seen", include_in_schema=False)
def seen_so_far() -> list:
    return SEEN


@app.get("/things/register", operation_id="register")
def register() -> dict:
    return record("register")


@app.get("/things/{thing_id}", operation_id="getThing")
def get_thing(thing_id: str) -> dict:
    return record("getThing", thing_id=thing_id)


@app.get("/things", operation_id="listThings")
def list_things(
    limit: Optional[int] = Query(default=None, ge=1, le=100),
    offset: Optional[int] = None,
    tag: Optional[List[str]] = Query(default=None),
) -> dict:
    return record("listThings", limit=limit, offset=offset, tag=tag)


@app.post("/things", operation_id="createThing")
def create_thing(thing: NewThing) -> dict:
    return record("createThing", body=thing.model_dump())


def exit_when_stdin_closes() -> None:
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print("listening", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
