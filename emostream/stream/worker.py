"""``AnalysisWorker``: drains the ring buffer through an ``EmotionPipeline`` on its own thread, never the event loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from emostream.inference.pipeline import EmotionPipeline
from emostream.stream.ring_buffer import RingBuffer

logger = logging.getLogger(__name__)


class AnalysisWorker(threading.Thread):
    """Drains the ring buffer through the pipeline on its own thread and hands each message on."""

    def __init__(self, ring: RingBuffer, pipeline: EmotionPipeline, on_message: Callable[[dict], None],
                 on_end: Callable[[], None] | None = None):
        super().__init__(name="emostream-analysis", daemon=True)
        self.ring, self.pipeline = ring, pipeline
        self.source_ended = False  # a finite source ran out (not a stop request): the daemon says "end"
        self.on_message, self.on_end = on_message, on_end
        self.stop_event = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        reported_overruns = 0
        try:
            while not self.stop_event.is_set():
                self.ring.wait_for_data(0.2)
                finished = self.ring.closed and self.ring.available == 0
                if self.ring.available:
                    for message in self.pipeline.process(self.ring.read()):
                        self.on_message(message)
                if self.ring.overrun_frames != reported_overruns:
                    logger.warning("audio overrun: %d frames dropped so far (analysis fell behind)",
                                   self.ring.overrun_frames)
                    reported_overruns = self.ring.overrun_frames
                if finished:  # flush what the resampler holds back, the open utterance, a short stream's score
                    for message in self.pipeline.finish():
                        self.on_message(message)
                    self.source_ended = not self.stop_event.is_set()
                    break
        except Exception as exc:  # keep the daemon up long enough to say why
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("analysis failed")
        finally:
            if self.on_end is not None:
                self.on_end()

    def stop(self) -> None:
        self.stop_event.set()
        self.ring.close()
