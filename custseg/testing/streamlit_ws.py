"""A cheap Streamlit client: one websocket speaking the app's own protobuf protocol, no browser.

It does what the browser's JavaScript does for a session (open `/_stcore/stream`, ask for a
script run, send widget states, read the deltas until the run finishes) and nothing it does not:
no rendering, no static assets. So N sessions cost the load generator almost nothing and a
timing is the server's alone.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates


@dataclass
class Run:
    """What one script run sent: its elements by kind, and how long it took."""

    seconds: float
    elements: dict[str, list] = field(default_factory=dict)
    status: str = ""


class Session:
    """One app session over a websocket; `await session.run()` is one script run."""

    def __init__(self, websocket) -> None:
        self._websocket = websocket
        self.buttons: dict[str, str] = {}  # label → widget id, from the runs so far
        self.sliders: dict[str, str] = {}

    @classmethod
    async def open(cls, url: str) -> Session:
        http = url.rstrip("/")
        stream = http.replace("http://", "ws://", 1) + "/_stcore/stream"
        websocket = await websockets.connect(
            stream, subprotocols=["streamlit"], origin=http, max_size=None
        )
        return cls(websocket)

    async def run(
        self,
        click: str | None = None,
        sliders: dict[str, float] | None = None,
        timeout_s: float = 120.0,
    ) -> Run:
        """Ask for a script run with the sliders labelled as in `sliders` set and the button
        labelled `click` clicked (names from earlier runs); wait for the run's end."""
        widgets = [
            WidgetState(id=self.sliders[label], double_array_value={"data": [value]})
            for label, value in (sliders or {}).items()
        ]
        if click is not None:
            widgets.append(WidgetState(id=self.buttons[click], trigger_value=True))
        message = BackMsg(rerun_script=ClientState(widget_states=WidgetStates(widgets=widgets)))
        started = time.perf_counter()
        await self._websocket.send(message.SerializeToString())
        run = Run(0.0)
        async with asyncio.timeout(timeout_s):
            while True:
                forward = ForwardMsg()
                forward.ParseFromString(await self._websocket.recv())
                kind = forward.WhichOneof("type")
                if kind == "delta" and forward.delta.WhichOneof("type") == "new_element":
                    element = forward.delta.new_element
                    name = element.WhichOneof("type")
                    run.elements.setdefault(name, []).append(getattr(element, name))
                    if name in ("button", "slider"):
                        widget = getattr(element, name)
                        getattr(self, f"{name}s")[widget.label] = widget.id
                elif kind == "script_finished":
                    status = ForwardMsg.ScriptFinishedStatus.Name(forward.script_finished)
                    if status == "FINISHED_EARLY_FOR_RERUN":
                        continue  # superseded by the run it made way for
                    run.status, run.seconds = status, time.perf_counter() - started
                    return run

    async def close(self) -> None:
        await self._websocket.close()
