"""Test helper: a real HTTP server on a loopback port, in a thread, answering what the test scripts and
recording every request (a deployed environment's URL, a Slack webhook, a throttling AWS endpoint).
The server is the local forge's (``sevenp_pipeline.devtools.local_forge.HTTPService``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sevenp_pipeline.devtools.local_forge import Answer, Request, Responder, serving

__all__ = ["Answer", "Request", "Responder", "Server", "http_server"]


@dataclass
class Server:
    url: str
    requests: list[Request]
    respond: Responder  # replace it to change what the server answers from now on


@contextmanager
def http_server(respond: Responder = lambda _req: Answer()) -> Iterator[Server]:
    state = Server(url="", requests=[], respond=respond)

    def answer(request: Request) -> Answer:
        state.requests.append(request)
        return state.respond(request)

    with serving(answer) as service:
        state.url = service.url
        yield state
