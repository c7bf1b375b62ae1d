"""The loopback receiver of the tests: the demo's receiver plus the switches only tests use.

In process:

    with Receiver(api_key=KEY, data_dir=tmp_path) as receiver:
        receiver.fail(503, count=3, retry_after="2", endpoint="cdr")
        receiver.fail(None, count=1, after=True)  # store the batch, then drop the connection
        receiver.refuse_key(); receiver.set_delay(0.2); receiver.set_hold(30)
        receiver.poison("raw.UserField", "bad", "poison CDR")

As a separate process: `python -m tests.doubles.receiver --port 0 --data-dir D` (from the
repository root) prints `READY http://127.0.0.1:PORT/v1` on stdout, then serves until SIGTERM.
The same switches are reachable over HTTP under /_test (see receiver_control.ReceiverControl):

    GET  /_test/summary      counts only          GET /_test/received   everything received
    POST /_test/fault        {"status": 503, "count": 3, "duration_s": null, "retry_after": "2",
                              "endpoint": "cdr", "after": false}   (status null = drop connection)
    POST /_test/key          {"refused": true}    POST /_test/delay     {"seconds": 0.2}
    POST /_test/poison       {"field": "raw.UserField", "equals": "bad", "message": "..."}
    POST /_test/clear_faults                      POST /_test/reset     forget everything
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from connector.demo import receiver
from connector.demo.receiver import DEFAULT_MAX_BODY_BYTES, ReceiverServer
from connector.demo.receiver_handler import BodyReader, ReceiverHandler
from connector.demo.receiver_state import BatchOutcome, Fault, ReceiverState

DEFAULT_API_KEY = "sk_" + "sim" + "0" * 29

Poison = Callable[[Mapping[str, Any]], bool]


def field_poison(path: str, equals: str) -> Poison:
    """Build a poison predicate: the CDR's field (`dst`, or `raw.UserField`) equals `equals`."""
    keys = path.split(".")

    def predicate(cdr: Mapping[str, Any]) -> bool:
        value: Any = cdr
        for key in keys:
            if not isinstance(value, Mapping) or key not in value:
                return False
            value = value[key]
        return str(value) == equals

    return predicate


@dataclass
class ScopedFault(Fault):
    """A fault for `count` requests and/or one endpoint; status None drops the connection."""

    status: int | None  # type: ignore[assignment]
    count: int | None = None
    endpoint: str | None = None  # cdr, recording, health; None = every endpoint
    after: bool = False  # process the request first, then answer with the fault (lost answer)

    def active(self, now: float) -> bool:
        """Tell whether the fault still applies."""
        return (self.count is None or self.count > 0) and super().active(now)


@dataclass
class SwitchedState(ReceiverState):
    """The receiver's state plus the tests' switches: refused key, delays, poison CDRs."""

    key_refused: bool = False
    delay_s: float = 0.0
    hold_s: float = 0.0  # after doing the work, wait this long before answering (a lost answer)
    poisons: list[tuple[Poison, str]] = field(default_factory=list)

    def take_fault(self, endpoint: str) -> Fault | None:
        """Return the first active fault for `endpoint`, using up one of its requests."""
        now = time.monotonic()
        with self.lock:
            self.faults = [fault for fault in self.faults if fault.active(now)]
            for fault in self.faults:
                assert isinstance(fault, ScopedFault)  # Receiver.fail and /_test/fault make only these
                if fault.endpoint in (None, endpoint):
                    if fault.count is not None:
                        fault.count -= 1
                    return fault
        return None

    def _refusal(self, key: str, body_sha256: str, cdrs: list[dict[str, Any]]) -> BatchOutcome | None:
        refused = super()._refusal(key, body_sha256, cdrs)
        if refused is not None:
            return refused
        for index, cdr in enumerate(cdrs):
            for predicate, message in self.poisons:
                if predicate(cdr):
                    return BatchOutcome(422, {"error": message, "index": index})
        return None

    def reset(self) -> None:
        """Forget everything received and every fault, poison and switch."""
        with self.lock:
            self.key_refused = False
            self.delay_s = 0.0
            self.hold_s = 0.0
            self.faults.clear()
            self.poisons.clear()
            self.cdrs.clear()
            self.arrivals.clear()
            self.counts.clear()
            self.recordings.clear()
            self.recording_counts.clear()
            self.answers.clear()
            self.idempotency.clear()
            self.batches = self.replays = 0
            self.last_headers = {}


class SwitchedHandler(ReceiverHandler):
    """The receiver's handler plus dropped connections, lost answers, delays and /_test controls."""

    def _route(self, method: str, path: str) -> None:
        if path.startswith("/_test/"):
            self._control(method, path.removeprefix("/_test/"))
        else:
            super()._route(method, path)

    def _api(self, endpoint: str) -> None:
        state = self._state
        fault = state.take_fault(endpoint)
        assert fault is None or isinstance(fault, ScopedFault)
        after = fault is not None and fault.after
        if fault is not None and fault.status is None and not after:
            self._drop(endpoint)
            return
        if state.delay_s > 0:
            time.sleep(state.delay_s)
        if fault is not None and not after:
            self._discard_body()
            self._reply_fault(endpoint, fault)
            return
        status, payload = self._authorized_call(endpoint)
        if state.hold_s > 0:
            time.sleep(state.hold_s)
        if fault is not None:  # an `after` fault: the work is done, the answer gets lost
            self._reply_fault(endpoint, fault)
            return
        state.note(endpoint, status, self.headers.items())
        self._reply(status, payload)

    @property
    def _state(self) -> SwitchedState:
        state = self.server.state
        assert isinstance(state, SwitchedState)
        return state

    def _authorized_call(self, endpoint: str) -> tuple[int, dict[str, Any]]:
        if endpoint != "health" and self._state.key_refused:
            self._discard_body()
            return 401, {"error": "invalid API key"}
        return super()._authorized_call(endpoint)

    def _reply_fault(self, endpoint: str, fault: Fault) -> None:
        if fault.status is None:
            self._drop(endpoint)
        else:
            super()._reply_fault(endpoint, fault)

    def _drop(self, endpoint: str) -> None:
        self.server.state.note(endpoint, "dropped", self.headers.items())
        self.close_connection = True  # returning without a byte written closes the socket

    def _control(self, method: str, action: str) -> None:
        body = BodyReader(self, self.server.max_body_bytes).read_all()
        try:
            args = json.loads(body) if body else {}
            handler = _CONTROLS.get((method, action))
            if handler is None:
                self._reply(404, {"error": f"no control {method} /_test/{action}"})
                return
            self._reply(200, handler(self._state, args))
        except (ValueError, TypeError, KeyError) as error:
            self._reply(400, {"error": f"bad control request: {error!r}"})


class Receiver(receiver.Receiver):
    """The demo's loopback API with the tests' switches (also reachable over HTTP under /_test)."""

    handler_type = SwitchedHandler
    state_type = SwitchedState
    state: SwitchedState

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: Path | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        super().__init__(
            api_key=api_key, host=host, port=port, data_dir=data_dir, max_body_bytes=max_body_bytes
        )

    @property
    def server(self) -> ReceiverServer:
        """The HTTP server (for the command line's serve_forever)."""
        return self._server

    def fail(  # type: ignore[override]
        self,
        status: int | None,
        *,
        count: int | None = None,
        duration_s: float | None = None,
        retry_after: str | None = None,
        endpoint: str | None = None,
        after: bool = False,
        body: str = "injected fault",
    ) -> None:
        """Answer `status` (None: drop the connection) to the next `count` requests or for a while."""
        until = None if duration_s is None else time.monotonic() + duration_s
        fault = ScopedFault(status, until, retry_after, body, count, endpoint, after)
        with self.state.lock:
            self.state.faults.append(fault)

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self.state.lock:
            self.state.faults.clear()

    def refuse_key(self, refused: bool = True) -> None:
        """Answer 401 to every API request while `refused`."""
        with self.state.lock:
            self.state.key_refused = refused

    def set_delay(self, seconds: float) -> None:
        """Wait this long before answering each API request."""
        with self.state.lock:
            self.state.delay_s = seconds

    def set_hold(self, seconds: float) -> None:
        """Do the work of each API request, then wait this long before answering."""
        with self.state.lock:
            self.state.hold_s = seconds

    def poison(self, path: str, equals: str, message: str = "poison CDR") -> None:
        """Reject with 422 any batch holding a CDR whose `path` (e.g. raw.UserField) equals `equals`."""
        self.poison_when(field_poison(path, equals), message)

    def poison_when(self, predicate: Poison, message: str = "poison CDR") -> None:
        """Reject with 422 any batch holding a CDR (the API's object) for which `predicate` holds."""
        with self.state.lock:
            self.state.poisons.append((predicate, message))

    def clear_poison(self) -> None:
        """Accept poison CDRs again."""
        with self.state.lock:
            self.state.poisons.clear()


def _fault(state: SwitchedState, args: dict[str, Any]) -> dict[str, Any]:
    until = args.get("duration_s")
    fault = ScopedFault(
        status=args.get("status"),
        count=args.get("count"),
        until=None if until is None else time.monotonic() + float(until),
        retry_after=None if args.get("retry_after") is None else str(args["retry_after"]),
        endpoint=args.get("endpoint"),
        after=bool(args.get("after", False)),
        body=str(args.get("body", "injected fault")),
    )
    with state.lock:
        state.faults.append(fault)
    return {"ok": True}


def _key(state: SwitchedState, args: dict[str, Any]) -> dict[str, Any]:
    with state.lock:
        state.key_refused = bool(args["refused"])
    return {"ok": True}


def _delay(state: SwitchedState, args: dict[str, Any]) -> dict[str, Any]:
    with state.lock:
        state.delay_s = float(args["seconds"])
    return {"ok": True}


def _poison(state: SwitchedState, args: dict[str, Any]) -> dict[str, Any]:
    with state.lock:
        if args.get("clear"):
            state.poisons.clear()
        else:
            predicate = field_poison(str(args["field"]), str(args["equals"]))
            state.poisons.append((predicate, str(args.get("message", "poison CDR"))))
    return {"ok": True}


def _clear_faults(state: SwitchedState, args: dict[str, Any]) -> dict[str, Any]:
    with state.lock:
        state.faults.clear()
    return {"ok": True}


def _reset(state: SwitchedState, args: dict[str, Any]) -> dict[str, Any]:
    state.reset()
    return {"ok": True}


_CONTROLS: dict[tuple[str, str], Callable[[SwitchedState, dict[str, Any]], dict[str, Any]]] = {
    ("GET", "summary"): lambda state, _: state.summary(),
    ("GET", "received"): lambda state, _: state.snapshot(),
    ("POST", "fault"): _fault,
    ("POST", "clear_faults"): _clear_faults,
    ("POST", "key"): _key,
    ("POST", "delay"): _delay,
    ("POST", "poison"): _poison,
    ("POST", "reset"): _reset,
}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.doubles.receiver", description="Loopback regional API for tests"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where uploads are kept")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    return parser.parse_args(argv)


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the receiver in the foreground until SIGTERM or Ctrl-C."""
    args = _parse_args(argv)
    running = Receiver(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        max_body_bytes=args.max_body_bytes,
    )
    signal.signal(signal.SIGTERM, _stop_on_signal)
    print(f"READY {running.base_url}", flush=True)
    try:
        running.server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
    print(json.dumps(running.state.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
