"""Boot events cross the process boundary (HTTP worker -> main process) unchanged, garbage does not."""

from __future__ import annotations

import json

import pytest

from provisioner.pxe.events import BootEvent, EventSource


def test_an_event_survives_its_json_form():
    event = BootEvent(stage="kernel", source=EventSource.HTTP, ip="10.0.0.5", detail={"path": "k", "range": None})
    assert BootEvent.from_json(json.loads(json.dumps(event.to_json()))) == event


@pytest.mark.parametrize("raw", [None, [], {}, {"stage": "x", "source": "smtp", "mac": None, "ip": None, "detail": {}},
                                 {"stage": 1, "source": "http", "mac": None, "ip": None, "detail": {}},
                                 {"stage": "x", "source": "http", "mac": None, "ip": None, "detail": 5}])
def test_anything_else_is_a_value_error(raw):
    with pytest.raises(ValueError, match="not a boot event"):
        BootEvent.from_json(raw)
