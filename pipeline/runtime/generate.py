"""Token generation on an :class:`~pipeline.runtime.engine.Engine`: prefill, then decode until
``max_tokens`` tokens, a stop token or a stop string."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

from .engine import Engine
from .sampling import Sampler


@dataclasses.dataclass
class GenerationStats:
    """Counts and times of one generation (seconds; rates in tokens per second)."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    stopped_by: str = "max_tokens"

    @property
    def prefill_rate(self) -> float:
        """Prompt tokens per second of prefill."""
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_rate(self) -> float:
        """Generated tokens per second after the first (which prefill produced)."""
        steps = self.generated_tokens - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds else 0.0


def generate(engine: Engine, prompt_ids: list[int], max_tokens: int, sampler: Sampler,
             stop_strings: tuple[str, ...] = (), stats: GenerationStats | None = None,
             continue_sequence: bool = False) -> Iterator[int]:
    """Yield up to ``max_tokens`` new token ids continuing ``prompt_ids``.

    Stops early, without yielding it, at a stop token (the package's eos / end-of-turn ids),
    after the token that completes a stop string, and when the KV cache is full (the last token
    yielded would not fit: ``stats.stopped_by`` is ``context_window``).  With
    ``continue_sequence`` the prompt is appended to the engine's current sequence (chat turns);
    otherwise a new sequence starts.

    Raises:
        PipelineError: the prompt does not fit the context window (before any prefill).
    """
    stats = stats if stats is not None else GenerationStats()
    if not continue_sequence:
        engine.reset()
    # greedy: the library takes the argmax on the device and only the token id is copied back
    greedy = sampler.temperature == 0
    start = time.perf_counter()
    token = engine.prefill_argmax(prompt_ids) if greedy else sampler(engine.prefill(prompt_ids))
    stats.prompt_tokens = len(prompt_ids)
    stats.prefill_seconds = time.perf_counter() - start
    start = time.perf_counter()
    text_ids: list[int] = []
    try:  # the decode time is kept also when the caller closes the generator (Ctrl-C in chat)
        for i in range(max_tokens):
            if token in engine.stop_token_ids:
                stats.stopped_by = "stop_token"
                if engine.length < engine.context_window:
                    engine.decode_argmax(token)  # keep the end-of-turn in the cache for the next chat turn
                break
            stats.generated_tokens += 1
            text_ids.append(token)
            yield token
            if stop_strings:
                text = engine.tokenizer.decode(text_ids)
                if any(s in text for s in stop_strings):
                    stats.stopped_by = "stop_string"
                    break
            if i + 1 < max_tokens:
                if engine.length >= engine.context_window:
                    stats.stopped_by = "context_window"
                    break
                token = engine.decode_argmax(token) if greedy else sampler(engine.decode(token))
    finally:
        stats.decode_seconds = time.perf_counter() - start
