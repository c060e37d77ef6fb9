"""Live camera: the frame rate the page shows while the camera streams (frames answered per
second over the last few seconds). Nothing here imports Gradio."""

from __future__ import annotations

import time
from collections import deque


class FrameRate:
    """Frames answered per second, over the last ``window`` seconds."""

    def __init__(self, window: float = 3.0, *, clock=time.monotonic):
        self.window, self._clock = window, clock
        self._times: deque[float] = deque()

    def tick(self) -> float:
        """Count one answered frame; the rate so far (0 until two frames are in)."""
        now = self._clock()
        self._times.append(now)
        while len(self._times) > 2 and self._times[0] < now - self.window:
            self._times.popleft()
        if len(self._times) < 2 or now == self._times[0]:
            return 0.0
        return (len(self._times) - 1) / (now - self._times[0])

    @staticmethod
    def text(fps: float) -> str:
        return f"{fps:.1f} frames per second" if fps else "measuring the frame rate…"
