"""Chat turns rendered from the package's conversation template, for both Gemma generations."""

from __future__ import annotations

import pytest

from pipeline.package.chat_config import TEMPLATES
from pipeline.runtime.chat import turn_end, turn_text


@pytest.mark.parametrize("family, turn, after_stop, after_cut", [
    ("gemma3", "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", "\n", "<end_of_turn>\n"),
    ("gemma4", "<|turn>user\nHi<turn|>\n<|turn>model\n", "\n", "<turn|>\n"),
])
def test_turn_text_and_closing(family, turn, after_stop, after_cut):
    template = TEMPLATES[family]
    assert turn_text(template, "Hi") == turn
    assert turn_end(template, stopped=True) == after_stop
    assert turn_end(template, stopped=False) == after_cut
