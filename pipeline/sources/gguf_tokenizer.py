"""Build a Hugging Face ``tokenizers`` tokenizer from the vocabulary inside a GGUF file.

Scope: GGUF files whose ``tokenizer.ggml.model`` is ``"llama"``, i.e. a SentencePiece-style
vocabulary (LLaMA 1/2, Mistral v0.1, Gemma 1/2/3, ...).  The result tokenizes text exactly like
llama.cpp's SPM tokenizer (``llm_tokenizer_spm`` in ``src/llama-vocab.cpp``) on the same file.

Format sources
--------------
* Metadata keys and token types: the ``gguf`` package (llama.cpp ``gguf-py``), ``gguf.Keys.Tokenizer``
  and ``gguf.TokenType``; the file is opened and checked by :class:`pipeline.sources.gguf_file.GGUFSource`.
* Defaults for absent optional keys: llama.cpp ``llama_vocab::load`` for ``"llama"`` vocabularies
  (bos=1, eos=2, unk=0, no pad, add_bos_token=True, add_eos_token=False, add_space_prefix=True).
* Segmentation: SentencePiece BPE as run by llama.cpp: the text is cut into Unicode characters,
  then the adjacent pair whose concatenation is a vocabulary piece with the highest score is merged,
  repeatedly (ties: leftmost pair first); characters that never became a piece are emitted as
  ``<0xNN>`` byte tokens (byte fallback).  Spaces are written as U+2581 ("▁") before segmenting.

How llama.cpp's algorithm is expressed as a ``tokenizers`` BPE model
--------------------------------------------------------------------
``tokenizers``' BPE merges, among the adjacent pairs that have a merge rule, the one with the
lowest rank (ties: leftmost).  We emit one merge rule ``(a, b)`` for every split of every piece
``p`` into two pieces ``a + b == p`` and rank the rules by the score of ``p`` (higher score = lower
rank; equal scores: lower id first; rules of one piece: split position ascending).  Both
algorithms then pick the same pair at every step, provided no two buildable pieces share a score
(llama.cpp breaks such ties by position, which a rank cannot express) and every character used
inside a piece is itself a piece; :func:`tokenizer_from_vocab` warns when a vocabulary breaks
either condition (Gemma 3's does not).  (A further theoretical gap: two *different*
rules building the same piece that overlap as ``[A][B][C]`` with ``A+B == B+C == p``, where
llama.cpp takes the left pair and ``tokenizers`` the lower-ranked one.  Reaching that state needs
``B`` to survive between ``A`` and ``C``, which the same-rank/leftmost rule prevents in every case
we searched: 444 000 periodic strings on Gemma 3's vocabulary and random small vocabularies
compared against a reference implementation found no input where the order of a piece's rules
matters.)

Pieces whose llama.cpp attributes include CONTROL or UNKNOWN become *special* added tokens and
the remaining USER_DEFINED pieces become non-special added tokens (both ``normalized=False``), so
they are cut out of the raw text before segmentation, like llama.cpp's ``tokenizer_st_partition``.
The attributes start from ``tokenizer.ggml.token_type`` and then get llama.cpp's text-based
overrides (see :func:`llama_cpp_token_attrs`; e.g. Gemma's user-defined ``</s>`` is also CONTROL).

Chosen behaviour for control tokens: ``Tokenizer.encode`` recognises control tokens written in the
text (e.g. ``<start_of_turn>``), which is llama.cpp's ``llama_tokenize(..., parse_special=true)``
(``Llama.tokenize(..., special=True)`` in llama-cpp-python).  Setting
``tokenizer.encode_special_tokens = True`` gives llama.cpp's ``parse_special=false`` instead
(control tokens are then segmented as plain text; user-defined tokens are still cut out, as in
llama.cpp).  ``encode(text)`` (``add_special_tokens=True``) prepends BOS when the GGUF says
``add_bos_token`` (and appends EOS for ``add_eos_token``), like ``llama_tokenize(add_special=true)``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
from tokenizers.models import BPE

from .gguf_file import GGUFFileNotFoundError, GGUFFormatError, GGUFSource

__all__ = [
    "GGUFTokenizerError",
    "GGUFFormatError",
    "GGUFFileNotFoundError",
    "GGUFVocab",
    "read_gguf_vocab",
    "tokenizer_from_vocab",
    "llama_cpp_token_attrs",
    "tokenizer_from_gguf",
    "write_tokenizer_json",
]

# Metadata keys: gguf-py's ``Keys.Tokenizer`` (``TOKENIZER.MODEL``, ``TOKENIZER.LIST``, ...).
TOKENIZER = gguf.Keys.Tokenizer

SPACE_MARK = "\u2581"  # "▁", SentencePiece's visible space

# llama.cpp ``llama_token_attr`` bits (include/llama.h).
ATTR_UNKNOWN = 1 << 0
ATTR_UNUSED = 1 << 1
ATTR_NORMAL = 1 << 2
ATTR_CONTROL = 1 << 3
ATTR_USER_DEFINED = 1 << 4
ATTR_BYTE = 1 << 5

_TYPE_TO_ATTR: dict[int, int] = {  # keyed by gguf.TokenType (an IntEnum), looked up by int
    gguf.TokenType.UNKNOWN: ATTR_UNKNOWN,
    gguf.TokenType.UNUSED: ATTR_UNUSED,
    gguf.TokenType.NORMAL: ATTR_NORMAL,
    gguf.TokenType.CONTROL: ATTR_CONTROL,
    gguf.TokenType.USER_DEFINED: ATTR_USER_DEFINED,
    gguf.TokenType.BYTE: ATTR_BYTE,
}

# Texts llama.cpp puts on its end-of-generation list and ORs the CONTROL attribute into, whatever
# the GGUF says (``llama_vocab::impl::load``, llama.cpp as bundled with llama-cpp-python 0.3.x;
# the list grows between llama.cpp versions).
_EOG_TEXTS = frozenset(
    {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
        "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
        "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    }
)
# Texts llama.cpp always sets to exactly USER_DEFINED (its gpt-oss rendering hack).
_FORCED_USER_DEFINED_TEXTS = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")

_BYTE_TOKEN_RE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


class GGUFTokenizerError(GGUFFormatError):
    """A GGUF file that cannot give a llama-style tokenizer; one line naming file, key, value, expectation."""


@dataclass(frozen=True)
class GGUFVocab:
    """The tokenizer part of a GGUF file, as llama.cpp interprets it.

    Attributes:
        path: the GGUF file it was read from.
        tokens: piece texts, index = token id; length ``n_vocab``.  Empty pieces are renamed
            ``[EMPTY_<id>]`` as llama.cpp does.
        scores: float32 array of shape ``(n_vocab,)``; SentencePiece log-probability-like scores
            (higher merges first).
        token_types: int32 array of shape ``(n_vocab,)`` with the file's gguf ``TokenType`` values
            (llama.cpp's text-based overrides are applied later, by :func:`llama_cpp_token_attrs`).
        bos_id, eos_id, unk_id: token ids (llama.cpp defaults 1, 2, 0 when the key is absent).
        pad_id: token id or None.
        add_bos, add_eos: whether ``llama_tokenize(add_special=true)`` adds BOS / EOS.
        add_space_prefix: whether llama.cpp prepends a space to each raw-text fragment that starts
            the text or follows a special/user-defined token.
        chat_template: ``tokenizer.chat_template`` (Jinja text) or None when the file has none.
    """

    path: Path
    tokens: list[str]
    scores: np.ndarray
    token_types: np.ndarray
    bos_id: int
    eos_id: int
    unk_id: int
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_template: str | None = None

    @property
    def n_vocab(self) -> int:
        """Number of tokens (the vocabulary size)."""
        return len(self.tokens)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_types(field) -> list:
    return list(getattr(field, "types", []) or [])


def _read_scalar(path: Path, fields, key: str, kind: str, default):
    """Read scalar ``key`` of ``kind`` ('str', 'int', 'bool'); ``default`` when absent (None = required)."""
    field = fields.get(key)
    if field is None:
        if default is None:
            raise GGUFTokenizerError(f"{path}: metadata key {key!r} is missing; expected a {kind} value")
        return default
    types = _field_types(field)
    vtype = types[0] if types else None
    ok = {
        "str": vtype == gguf.GGUFValueType.STRING,
        "bool": vtype == gguf.GGUFValueType.BOOL,
        "int": vtype
        in (
            gguf.GGUFValueType.UINT8, gguf.GGUFValueType.INT8, gguf.GGUFValueType.UINT16,
            gguf.GGUFValueType.INT16, gguf.GGUFValueType.UINT32, gguf.GGUFValueType.INT32,
            gguf.GGUFValueType.UINT64, gguf.GGUFValueType.INT64,
        ),
    }[kind]
    if not ok or len(types) != 1:
        name = "/".join(t.name for t in types) or "unknown"
        raise GGUFTokenizerError(f"{path}: metadata key {key!r} has type {name}; expected a scalar {kind}")
    value = field.contents()
    if kind == "int":
        return int(value)
    if kind == "bool":
        return bool(value)
    return str(value)


def _read_array(path: Path, fields, key: str, elem_type, elem_name: str):
    field = fields.get(key)
    if field is None:
        raise GGUFTokenizerError(f"{path}: metadata key {key!r} is missing; expected an array of {elem_name}")
    types = _field_types(field)
    if len(types) != 2 or types[0] != gguf.GGUFValueType.ARRAY or types[1] != elem_type:
        name = "/".join(t.name for t in types) or "unknown"
        raise GGUFTokenizerError(f"{path}: metadata key {key!r} has type {name}; expected ARRAY/{elem_name}")
    try:
        return field.contents()
    except Exception as err:  # e.g. a token that is not valid UTF-8
        raise GGUFTokenizerError(
            f"{path}: metadata key {key!r} could not be decoded ({type(err).__name__}: {err}); "
            f"expected an array of {elem_name}"
        ) from None


def read_gguf_vocab(source: str | os.PathLike | GGUFSource) -> GGUFVocab:
    """Read the llama-style (SentencePiece) vocabulary stored in a GGUF file.

    Args:
        source: a GGUF file (format: llama.cpp ``gguf-py``; keys ``tokenizer.ggml.*``), by path or
            already opened as a :class:`~pipeline.sources.gguf_file.GGUFSource` (not read again).

    Returns:
        A :class:`GGUFVocab` (token texts, float32 scores ``(n_vocab,)``, int32 token types
        ``(n_vocab,)``, special ids and flags).  Absent optional keys take llama.cpp's defaults for
        ``"llama"`` vocabularies: bos 1, eos 2, unk 0, no pad, add_bos_token True, add_eos_token
        False, add_space_prefix True.

    Raises:
        GGUFFileNotFoundError (a FileNotFoundError): ``path`` is not an existing regular file.
        GGUFFormatError (a ValueError): not a readable GGUF (see :class:`GGUFSource`).
        GGUFTokenizerError (a GGUFFormatError): ``tokenizer.ggml.model`` absent or
            not ``"llama"``; ``tokens``/``scores``/``token_type`` absent, of the wrong type or of
            different lengths; duplicate piece texts (llama.cpp refuses them too); a special-token
            id outside ``[0, n_vocab)``; a BYTE token whose text is not ``<0xNN>``.
    """
    source = source if isinstance(source, GGUFSource) else GGUFSource(source)
    path, fields = source.path, source.fields

    model = _read_scalar(path, fields, TOKENIZER.MODEL, "str", None)
    if model != "llama":
        raise GGUFTokenizerError(
            f"{path}: metadata key {TOKENIZER.MODEL!r} = {model!r}; expected 'llama' (a SentencePiece-style vocabulary)"
        )
    tokens = [str(t) for t in _read_array(path, fields, TOKENIZER.LIST, gguf.GGUFValueType.STRING, "STRING")]
    n_vocab = len(tokens)
    if n_vocab == 0:
        raise GGUFTokenizerError(f"{path}: metadata key {TOKENIZER.LIST!r} is empty; expected at least one token")
    scores = np.asarray(_read_array(path, fields, TOKENIZER.SCORES, gguf.GGUFValueType.FLOAT32, "FLOAT32"),
                        dtype=np.float32)
    types = np.asarray(_read_array(path, fields, TOKENIZER.TOKEN_TYPE, gguf.GGUFValueType.INT32, "INT32"),
                       dtype=np.int32)
    for key, arr in ((TOKENIZER.SCORES, scores), (TOKENIZER.TOKEN_TYPE, types)):
        if arr.shape != (n_vocab,):
            raise GGUFTokenizerError(
                f"{path}: metadata key {key!r} has {arr.shape[0]} entries; expected {n_vocab} (one per token)"
            )

    tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]  # llama.cpp renames empty pieces
    if len(set(tokens)) != n_vocab:
        seen: dict[str, int] = {}
        for i, t in enumerate(tokens):
            if t in seen:
                raise GGUFTokenizerError(
                    f"{path}: metadata key {TOKENIZER.LIST!r} has token {_short(t)} at ids {seen[t]} and {i}; "
                    "expected unique token texts"
                )
            seen[t] = i

    for byte_id in np.flatnonzero(types == gguf.TokenType.BYTE):
        if not _BYTE_TOKEN_RE.fullmatch(tokens[byte_id]):
            raise GGUFTokenizerError(
                f"{path}: metadata key {TOKENIZER.TOKEN_TYPE!r} marks token {int(byte_id)} = {_short(tokens[byte_id])} "
                f"as BYTE; "
                "expected its text to be '<0xNN>'"
            )

    def special_id(key: str) -> int | None:
        """The id at ``key`` (checked to be in the vocabulary), None when absent."""
        if key not in fields:
            return None
        value: int = _read_scalar(path, fields, key, "int", None)
        if not 0 <= value < n_vocab:
            raise GGUFTokenizerError(f"{path}: metadata key {key!r} = {value}; expected a token id in [0, {n_vocab})")
        return value

    def or_default(key: str, value: int | None, default: int) -> int:
        """``value``, else llama.cpp's default id for ``key`` when the vocabulary covers it."""
        if value is not None:
            return value
        if default >= n_vocab:  # a default that the (tiny) vocabulary does not cover
            raise GGUFTokenizerError(
                f"{path}: metadata key {key!r} is missing and llama.cpp's default id {default} is outside "
                f"the {n_vocab}-token vocabulary; expected the key to be set"
            )
        return default

    bos, eos, unk, pad_id = (special_id(key)
                             for key in (TOKENIZER.BOS_ID, TOKENIZER.EOS_ID, TOKENIZER.UNK_ID, TOKENIZER.PAD_ID))
    bos_id = or_default(TOKENIZER.BOS_ID, bos, 1)
    eos_id = or_default(TOKENIZER.EOS_ID, eos, 2)
    unk_id = or_default(TOKENIZER.UNK_ID, unk, 0)
    return GGUFVocab(
        path=path,
        tokens=tokens,
        scores=scores,
        token_types=types,
        bos_id=bos_id,
        eos_id=eos_id,
        unk_id=unk_id,
        pad_id=pad_id,
        add_bos=_read_scalar(path, fields, TOKENIZER.ADD_BOS, "bool", True),
        add_eos=_read_scalar(path, fields, TOKENIZER.ADD_EOS, "bool", False),
        add_space_prefix=_read_scalar(path, fields, TOKENIZER.ADD_PREFIX, "bool", True),
        chat_template=_read_scalar(path, fields, TOKENIZER.CHAT_TEMPLATE, "str", "") or None,
    )


# --------------------------------------------------------------------------------------------
# merges
# --------------------------------------------------------------------------------------------


def _derive_merges(tokens: list[str], scores: np.ndarray) -> tuple[list[tuple[str, str]], list[int]]:
    """All merge rules ``(a, b)`` with ``a``, ``b`` and ``a + b`` in the vocabulary, best first.

    Ranked by the float32 score of ``a + b`` (descending), then its id (ascending), then the split
    position (ascending).  Cost: one dict lookup per character boundary of every piece (about
    1.5 M for a 262 144-token vocabulary, ~1 s).

    Returns:
        ``(merges, built_ids)``: the ranked rules and the ids of the pieces they build.
    """
    vocab = {t: i for i, t in enumerate(tokens)}
    order = np.lexsort((np.arange(len(tokens)), -scores.astype(np.float64)))  # score desc, id asc
    merges: list[tuple[str, str]] = []
    built: list[int] = []
    append = merges.append
    for piece_id in order.tolist():
        piece = tokens[piece_id]
        n_before = len(merges)
        for k in range(1, len(piece)):
            left = piece[:k]
            if left in vocab:
                right = piece[k:]
                if right in vocab:
                    append((left, right))
        if len(merges) != n_before:
            built.append(piece_id)
    return merges, built


def _warn_unrepresentable(vocab: GGUFVocab, attrs: np.ndarray, built: list[int]) -> None:
    """Warn about the two vocabulary properties that a BPE model cannot reproduce exactly.

    1. Pieces with *equal* scores that merges can build: llama.cpp breaks such ties by text
       position, ``tokenizers`` by rank (we use id order), so they can differ when both compete.
    2. Characters used inside pieces that are not pieces themselves: llama.cpp can still merge them
       into a longer piece; ``tokenizers`` turns them into byte tokens first.
    Neither happens for Gemma 3 (all scores of buildable plain pieces differ; every character is a
    piece).  Pieces that are cut out before segmentation (control / user-defined) are ignored.
    """
    plain = (attrs & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER_DEFINED)) == 0
    built_plain = [i for i in built if plain[i]]
    values = vocab.scores[built_plain]
    n_tied = len(values) - len(np.unique(values))
    if n_tied:
        warnings.warn(
            f"{vocab.path}: {n_tied} buildable pieces share a score with another; llama.cpp breaks such "
            "ties by position, so tokenization may differ from llama.cpp where they compete",
            stacklevel=3,
        )
    known = set(vocab.tokens)
    missing = {c for i in built_plain for c in vocab.tokens[i] if c not in known}
    if missing:
        warnings.warn(
            f"{vocab.path}: {len(missing)} characters (e.g. {_short(sorted(missing)[:5])}) occur inside pieces "
            "but are not pieces themselves; text containing them may tokenize differently from llama.cpp",
            stacklevel=3,
        )


def llama_cpp_token_attrs(tokens: list[str], token_types: np.ndarray) -> np.ndarray:
    """llama.cpp's per-token attribute bits (``llama_token_attr``) for a vocabulary.

    Starts from the GGUF token types (UNDEFINED/unknown values -> 0) and applies the text-based
    overrides of llama.cpp's vocabulary loader: end-of-generation texts (``<end_of_turn>``,
    ``<|im_end|>``, ``</s>``, ...) gain CONTROL; ``<|channel|>``/``<|message|>``/``<|start|>``/
    ``<|constrain|>`` become USER_DEFINED; ``<|end|>`` becomes USER_DEFINED when
    ``<|return|>``+``<|call|>`` or ``<|calls|>``+``<|flush|>`` are present; ``</s>`` becomes NORMAL
    when ``<|tool_response>`` is present.  Not modelled: FIM-token auto-detection (only for files
    without ``tokenizer.ggml.fim_*`` ids) and the phi-3 / jina / modern-bert lstrip/rstrip flags.

    Returns:
        uint32 array of shape ``(len(tokens),)``.
    """
    attrs = np.array([_TYPE_TO_ATTR.get(int(t), 0) for t in token_types.tolist()], dtype=np.uint32)
    by_text = {t: i for i, t in enumerate(tokens)}
    eog = {t for t in _EOG_TEXTS if t in by_text}
    for t in eog:
        attrs[by_text[t]] |= ATTR_CONTROL
    for t in _FORCED_USER_DEFINED_TEXTS:
        if t in by_text:
            attrs[by_text[t]] = ATTR_USER_DEFINED
    has_call = "<|call|>" in eog or "<|calls|>" in eog
    if "<|end|>" in eog and has_call and ("<|return|>" in eog or "<|flush|>" in eog):
        attrs[by_text["<|end|>"]] = ATTR_USER_DEFINED
    if "<|tool_response>" in eog and "</s>" in eog:
        attrs[by_text["</s>"]] = ATTR_NORMAL
    return attrs


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------


def tokenizer_from_vocab(vocab: GGUFVocab) -> Tokenizer:
    """Build the ``tokenizers.Tokenizer`` for a :class:`GGUFVocab` (see the module docstring).

    Token ids equal GGUF token ids (0 .. n_vocab-1).  Pipeline: added tokens (control = special,
    user-defined = not special; both matched on raw text) -> normaliser (prepend "▁" when
    ``add_space_prefix``; " " -> "▁") -> BPE with byte fallback -> post-processor adding BOS/EOS per
    ``add_bos``/``add_eos`` -> decoder ("▁" -> " ", byte fallback, fuse, and strip one leading space
    when ``add_space_prefix``).
    """
    tokens = vocab.tokens
    attrs = llama_cpp_token_attrs(tokens, vocab.token_types)
    merges, built = _derive_merges(tokens, vocab.scores)
    _warn_unrepresentable(vocab, attrs, built)
    model = BPE(
        vocab={t: i for i, t in enumerate(tokens)},
        merges=merges,
        unk_token=tokens[vocab.unk_id],
        fuse_unk=True,
        byte_fallback=True,
        ignore_merges=False,
    )
    tok = Tokenizer(model)

    norm: list[normalizers.Normalizer] = [normalizers.Replace(" ", SPACE_MARK)]
    if vocab.add_space_prefix:
        norm.insert(0, normalizers.Prepend(SPACE_MARK))
    tok.normalizer = normalizers.Sequence(norm)

    dec = [decoders.Replace(SPACE_MARK, " "), decoders.ByteFallback(), decoders.Fuse()]
    if vocab.add_space_prefix:
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)

    added = []
    for i in np.flatnonzero(attrs & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER_DEFINED)).tolist():
        special = bool(attrs[i] & (ATTR_CONTROL | ATTR_UNKNOWN))  # llama.cpp skips these unless parse_special
        added.append(
            AddedToken(tokens[i], special=special, normalized=False, lstrip=False, rstrip=False, single_word=False)
        )
    tok.add_tokens(added)  # AddedToken.special decides how each is treated; ids come from the model vocab

    single, pair, specials = "$A:0", "$A:0 $B:1", []
    if vocab.add_bos:
        bos = tokens[vocab.bos_id]
        single, pair = f"{bos}:0 {single}", f"{bos}:0 $A:0 {bos}:1 $B:1"
        specials.append((bos, vocab.bos_id))
    if vocab.add_eos:
        eos = tokens[vocab.eos_id]
        single, pair = f"{single} {eos}:0", pair.replace("$A:0", f"$A:0 {eos}:0") + f" {eos}:1"
        specials.append((eos, vocab.eos_id))
    if specials:
        tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    return tok


def tokenizer_from_gguf(path: str | os.PathLike | GGUFSource) -> Tokenizer:
    """Read ``path`` (a GGUF with a ``"llama"`` vocabulary, or its GGUFSource) and build its tokenizer.

    ``encode(text, add_special_tokens=False).ids`` equals llama.cpp's
    ``llama_tokenize(text, add_special=false, parse_special=true)``; with the default
    ``add_special_tokens=True`` BOS/EOS are added as llama.cpp's ``add_special=true`` does.
    Takes about 10-15 s for a 262 144-token vocabulary (mostly ``gguf.GGUFReader``).

    Raises:
        GGUFFileNotFoundError / GGUFFormatError / GGUFTokenizerError: see :func:`read_gguf_vocab`.
    """
    return tokenizer_from_vocab(read_gguf_vocab(path))


def tokenizer_config(vocab: GGUFVocab) -> dict:
    """The small ``tokenizer_config.json`` dictionary for ``vocab`` (special-token texts and flags)."""
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": vocab.tokens[vocab.bos_id],
        "eos_token": vocab.tokens[vocab.eos_id],
        "unk_token": vocab.tokens[vocab.unk_id],
        "pad_token": vocab.tokens[vocab.pad_id] if vocab.pad_id is not None else None,
        "add_bos_token": vocab.add_bos,
        "add_eos_token": vocab.add_eos,
        "clean_up_tokenization_spaces": False,
    }
    if vocab.chat_template is not None:
        cfg["chat_template"] = vocab.chat_template
    return cfg


def write_tokenizer_json(path: str | os.PathLike | GGUFSource, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` for the GGUF ``path`` (or its
    GGUFSource) into ``out_dir``.

    ``out_dir`` is created if needed; existing files of those names are overwritten.

    Returns:
        ``(tokenizer_json_path, tokenizer_config_json_path)``.

    Raises:
        GGUFFileNotFoundError / GGUFFormatError / GGUFTokenizerError: see :func:`read_gguf_vocab`.
    """
    vocab = read_gguf_vocab(path)
    tok = tokenizer_from_vocab(vocab)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok_path = out / "tokenizer.json"
    cfg_path = out / "tokenizer_config.json"
    tok.save(str(tok_path))
    cfg_path.write_text(json.dumps(tokenizer_config(vocab), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return tok_path, cfg_path
