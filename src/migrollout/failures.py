"""A step of the toolkit that cannot do what was asked, with the facts it gathered before it stopped."""

from __future__ import annotations

from typing import Any


class StepFailed(Exception):
    """``msg`` is one sentence that names the node and the reason; ``result`` the facts gathered so far (the
    adapters return them with the failure, so a report can say how far the step got)."""

    def __init__(self, msg: str, **result: Any):
        super().__init__(msg)
        self.msg = msg
        self.result = result
