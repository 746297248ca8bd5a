"""GGUF files (llama.cpp's format): metadata, tokenizer data and dequantised weights, offline.

The header, the key/value metadata and the tensor table are parsed here with `struct` over a
memory map (the `gguf` package's reader builds one numpy view per array element and takes
seconds on a 49k-token vocabulary); tensor data is dequantised to float32 by the `gguf`
package (`gguf.quants.dequantize`), one tensor at a time, and copied into a model allocated
once in the requested dtype.

Layout (little-endian, GGUF v2/v3):
  magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
  n_kv x (key: string, value type: u32, value)          string = u64 length + UTF-8 bytes
  n_tensors x (name: string, n_dims: u32, dims: n_dims x u64 (ne0 innermost), ggml type: u32,
               offset: u64 from the data section)
  padding to `general.alignment` (default 32), then the data section.
A tensor with dims (ne0, ne1) is row-major [ne1, ne0] in PyTorch terms.

llama.cpp's converter stores the Q and K projections of `llama`-architecture models permuted
for its interleaved RoPE (pairs (2i, 2i+1) of a head rotate together), while Hugging Face
Llama rotates (i, i + head_dim/2) pairs (rotate_half). Loading un-permutes those rows, so the
model computes what the original checkpoint computes; `qwen2` files are stored unpermuted
(llama.cpp runs them with NeoX-style RoPE, which is rotate_half).
"""
from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dllm.errors import ModelLoadError
from dllm.models.config import FIELDS, ModelArgs, check_args, check_field

_MAGIC = b"GGUF"
# value type id -> struct format of a scalar (8 = string, 9 = array are handled apart)
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
SUPPORTED_ARCHS = ("llama", "qwen2")
_MAX_DIMS = 4                 # GGML_MAX_DIMS
_MAX_ELEMENTS = 1 << 40       # per tensor; what fits in memory is checked before allocating
# <arch>.key of the metadata -> the config.json field whose type and range it must have (config.FIELDS)
_GGUF_FIELDS = {"embedding_length": "hidden_size", "attention.head_count": "num_attention_heads",
                "attention.head_count_kv": "num_key_value_heads", "block_count": "num_hidden_layers",
                "feed_forward_length": "intermediate_size", "context_length": "max_position_embeddings",
                "vocab_size": "vocab_size", "attention.layer_norm_rms_epsilon": "rms_norm_eps",
                "rope.freq_base": "rope_theta"}

# GGUF tensor name -> dllm parameter name; {i} is the layer index
_NAMES = {
    "token_embd.weight": "tok_embeddings.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "output.weight",
    "blk.{i}.attn_norm.weight": "layers.{i}.attention_norm.weight",
    "blk.{i}.ffn_norm.weight": "layers.{i}.ffn_norm.weight",
    **{f"blk.{{i}}.attn_{p}.{t}": f"layers.{{i}}.attention.w{p}.{t}" for p in "qkv" for t in ("weight", "bias")},
    "blk.{i}.attn_output.weight": "layers.{i}.attention.wo.weight",
    "blk.{i}.ffn_gate.weight": "layers.{i}.feed_forward.w1.weight",
    "blk.{i}.ffn_up.weight": "layers.{i}.feed_forward.w3.weight",
    "blk.{i}.ffn_down.weight": "layers.{i}.feed_forward.w2.weight",
}


def gguf_name(name: str) -> str | None:
    """GGUF tensor name -> dllm parameter name (None when unknown)."""
    if name.startswith("blk."):
        _, layer, rest = name.split(".", 2)
        if not layer.isdigit():
            return None
        dst = _NAMES.get("blk.{i}." + rest)
        return dst.replace("{i}", layer) if dst else None
    return _NAMES.get(name)


@dataclass
class TensorInfo:
    name: str
    dims: tuple          # ggml order: dims[0] = ne0, the innermost (contiguous) axis
    ggml_type: int
    offset: int          # absolute byte offset in the file

    @property
    def shape(self) -> tuple:
        """PyTorch shape: the dims reversed."""
        return tuple(reversed(self.dims))


@dataclass
class GGUFFile:
    path: Path
    version: int
    metadata: dict
    tensors: dict = field(default_factory=dict)   # name -> TensorInfo, in file order
    _map: mmap.mmap | None = None

    @property
    def arch(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def get(self, key: str, default=None):
        """An architecture key, e.g. get("block_count") reads "<arch>.block_count"."""
        return self.metadata.get(f"{self.arch}.{key}", default)

    def raw(self, info: TensorInfo, nbytes: int) -> np.ndarray:
        """The tensor's bytes as uint8 [rows..., row_bytes] (a view of the memory map)."""
        if info.offset + nbytes > len(self._map):
            raise ModelLoadError(f"{self.path.name}: tensor {info.name!r} runs past the end of the file (truncated GGUF).")
        flat = np.frombuffer(self._map, dtype=np.uint8, count=nbytes, offset=info.offset)
        return flat.reshape(*info.shape[:-1], -1) if len(info.shape) > 1 else flat

    def close(self):
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:   # a numpy view of the map is still alive: the GC unmaps it later
                pass
            self._map = None


class _Cursor:
    """Sequential little-endian reads over the memory map; any overrun is a truncated file."""

    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def scalar(self, fmt: str):
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.scalar("<Q")
        if self.pos + n > len(self.buf):
            raise struct.error("string past the end of the file")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, vtype: int):
        if vtype in _SCALAR:
            return self.scalar(_SCALAR[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, n = self.scalar("<I"), self.scalar("<Q")
            if etype in _NUMPY:   # numeric arrays in one read (token types, scores)
                dt = np.dtype(_NUMPY[etype]).newbyteorder("<")
                arr = np.frombuffer(self.buf, dtype=dt, count=n, offset=self.pos)
                self.pos += n * dt.itemsize
                return arr.tolist()
            if etype == 8:   # string arrays (vocabularies, merges): a tight loop, ~100k items
                buf, pos, unpack, out = self.buf, self.pos, struct.Struct("<Q").unpack_from, []
                for _ in range(n):
                    length = unpack(buf, pos)[0]
                    end = pos + 8 + length
                    if end > len(buf):
                        raise struct.error("string past the end of the file")
                    out.append(buf[pos + 8:end].decode("utf-8", errors="replace"))
                    pos = end
                self.pos = pos
                return out
            return [self.value(etype) for _ in range(n)]
        raise ValueError(f"unknown metadata value type {vtype}")


def read_gguf(path) -> GGUFFile:
    """Parse the header, metadata and tensor table of a GGUF file (tensor data stays mapped)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:   # the map stays valid after the file is closed
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except ValueError:   # mmap of an empty file
        raise ModelLoadError(f"{path.name} is not a valid GGUF file (it is empty).") from None
    except OSError as e:
        raise ModelLoadError(f"cannot open GGUF file {str(path)!r} ({e.strerror}).") from None
    if buf[:4] != _MAGIC:
        buf.close()
        raise ModelLoadError(f"{path.name} is not a GGUF file (it does not start with the GGUF magic).")
    c = _Cursor(buf, path)
    c.pos = 4
    try:
        version = c.scalar("<I")
        if version not in (2, 3):
            if version & 0xFFFF == 0:   # a small big-endian number read little-endian
                raise ModelLoadError(f"{path.name} is a big-endian GGUF file; only little-endian GGUF is supported.")
            raise ModelLoadError(f"{path.name} is GGUF version {version}; dllm reads GGUF versions 2 and 3.")
        n_tensors, n_kv = c.scalar("<Q"), c.scalar("<Q")
        meta = {}
        for _ in range(n_kv):
            key = c.string()
            meta[key] = c.value(c.scalar("<I"))
        infos = []
        for _ in range(n_tensors):
            name = c.string()
            n_dims = c.scalar("<I")
            if not 1 <= n_dims <= _MAX_DIMS:
                raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
            dims = tuple(c.scalar("<Q") for _ in range(n_dims))
            if not all(1 <= d <= _MAX_ELEMENTS for d in dims) or math.prod(dims) > _MAX_ELEMENTS:
                raise ValueError(f"tensor {name!r} has dimensions {dims}")
            infos.append((name, dims, c.scalar("<I"), c.scalar("<Q")))
        align = meta.get("general.alignment", 32)
        if isinstance(align, bool) or not isinstance(align, int) or not 1 <= align <= 1 << 20 or align & (align - 1):
            raise ValueError(f"general.alignment is {align!r}, not a power of two")
    except ModelLoadError:
        buf.close()
        raise
    except (struct.error, ValueError, OverflowError, MemoryError, RecursionError) as e:
        buf.close()
        raise ModelLoadError(f"{path.name} is not a valid GGUF file (truncated or corrupt header: "
                             f"{str(e)[:200] or type(e).__name__}).") from None
    data_start = -(-c.pos // align) * align   # the data section starts at the next multiple of align
    f = GGUFFile(path, version, meta, _map=buf)
    for name, dims, gtype, off in infos:
        f.tensors[name] = TensorInfo(name, dims, gtype, data_start + off)
    return f


# ---- model ---------------------------------------------------------------------------------------

def gguf_args(f: GGUFFile) -> ModelArgs:
    """ModelArgs from the metadata of a llama / qwen2 GGUF file (refusing what dllm cannot run)."""
    arch = f.arch
    if arch not in SUPPORTED_ARCHS:
        raise ModelLoadError(f"{f.path.name} holds a {arch or 'unnamed'!r} architecture model; dllm loads GGUF "
                             f"files of the {' and '.join(repr(a) for a in SUPPORTED_ARCHS)} architectures.")

    def need(key, default=None):
        """<arch>.key checked as the config.json field it stands for (config.FIELDS: type, range)."""
        v = f.get(key, default)
        if v is None:
            raise ModelLoadError(f"{f.path.name} lacks the metadata key {arch}.{key!s}.")
        if isinstance(v, list):
            raise ModelLoadError(f"{f.path.name} has a per-layer {arch}.{key}, which dllm does not support.")
        kind, interval = FIELDS[_GGUF_FIELDS[key]]
        return check_field(f"{arch}.{key}", v, kind, interval, where=f.path.name)

    if f.get("expert_count"):
        raise ModelLoadError(f"{f.path.name} is a mixture-of-experts model, which dllm does not support.")
    scaling = f.get("rope.scaling.type")
    if (scaling not in (None, "none") or f.get("rope.scaling.factor", 1.0) not in (0.0, 1.0)
            or "rope_freqs.weight" in f.tensors):
        raise ModelLoadError(f"{f.path.name} uses RoPE scaling ({scaling or 'rope_freqs'}); dllm supports only plain RoPE.")
    dim, n_heads = need("embedding_length"), need("attention.head_count")
    n_kv = need("attention.head_count_kv", n_heads)
    hd = dim // n_heads
    for key in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        if f.get(key) not in (None, hd):
            raise ModelLoadError(f"{f.path.name} has {arch}.{key}={f.get(key)!r}, but dllm needs it equal to the "
                                 f"head dimension {hd}.")
    emb = f.tensors.get("token_embd.weight")
    if emb is None:
        raise ModelLoadError(f"{f.path.name} has no token_embd.weight tensor.")
    m = f.metadata
    eos = [m[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")
           if isinstance(m.get(k), int) and not isinstance(m.get(k), bool)]
    pad = m.get("tokenizer.ggml.padding_token_id")
    return check_args(ModelArgs(
        family=arch,
        vocab_size=check_field("token_embd rows", emb.dims[1], *FIELDS["vocab_size"], where=f.path.name)
        if len(emb.dims) == 2 else need("vocab_size"),
        dim=dim,
        n_layers=need("block_count"),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        intermediate_size=need("feed_forward_length"),
        norm_eps=float(need("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(need("rope.freq_base", 10000.0)),
        max_seq_len=need("context_length", 2048),
        mask_token_id=-1,
        eos_token_ids=tuple(dict.fromkeys(eos)),
        pad_token_id=pad if isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0 else None,
        qkv_bias="blk.0.attn_q.bias" in f.tensors,
        tie_embeddings="output.weight" not in f.tensors,
        rope_fp32=False,
        causal=True,
    ), where=f.path.name)


def unpermute_rope(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation: [heads*hd, ...] interleaved -> rotate_half order.

    Per head, GGUF row 2i + c holds Hugging Face row c*hd/2 + i (c in {0, 1}, i < hd/2):
    view as [heads, hd/2, 2, ...], swap the two middle axes -> [heads, 2, hd/2, ...].
    """
    rest = w.shape[1:]
    return w.reshape(heads, -1, 2, *rest).transpose(1, 2).reshape(w.shape)


def _dequantize(f: GGUFFile, info: TensorInfo, gguf) -> torch.Tensor:
    """One tensor -> float32 torch tensor of shape info.shape."""
    qtype = gguf.GGMLQuantizationType(info.ggml_type)
    data = f.raw(info, _nbytes(f, info, gguf))
    try:
        arr = gguf.quants.dequantize(data, qtype)
    except NotImplementedError:
        raise ModelLoadError(f"{f.path.name}: the gguf package cannot dequantise {qtype.name} tensors "
                             f"({info.name!r}).") from None
    arr = np.asarray(arr, dtype=np.float32)
    if not arr.flags.writeable:   # F32 comes back as a view of the read-only map
        arr = arr.copy()
    return torch.from_numpy(arr).reshape(info.shape)


def import_gguf():
    try:
        import gguf
    except ImportError:
        raise ModelLoadError("loading GGUF weights needs the 'gguf' package; install it with "
                             "pip install 'dllm[gguf]' (or pip install gguf).") from None
    return gguf


def _nbytes(f: GGUFFile, info: TensorInfo, gguf) -> int:
    """Bytes of the tensor's data; refuses unknown types, integer types and partial blocks."""
    try:
        qtype = gguf.GGMLQuantizationType(info.ggml_type)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise ModelLoadError(f"{f.path.name}: tensor {info.name!r} has ggml type {info.ggml_type}, which the "
                             "installed gguf package does not know.") from None
    if qtype.name.startswith("I"):   # I8 .. I64: integer data, which no llama / qwen2 weight is
        raise ModelLoadError(f"{f.path.name}: tensor {info.name!r} is stored as {qtype.name}; {f.arch} weights are "
                             "floating-point or quantised, never integer tensors.")
    if info.dims[0] % block:
        raise ModelLoadError(f"{f.path.name}: tensor {info.name!r} rows of {info.dims[0]} values are not whole "
                             f"{qtype.name} blocks of {block}.")
    return math.prod(info.dims) // block * type_size


def load_gguf_model(path, device="cpu", dtype=torch.float32):
    """(Transformer, ModelArgs) from a .gguf file, weights dequantised to float32 then cast to dtype.
    Metadata, tensor names, shapes, types and data extents are all checked before allocating."""
    from dllm.models.loader import _layer_count, allocate, meta_model

    f = read_gguf(path)
    try:
        args = gguf_args(f)
        gguf = import_gguf()
        if _layer_count(f.tensors) < args.n_layers:
            raise ModelLoadError(f"{f.path.name} gives {args.n_layers} blocks, but its tensors hold "
                                 f"{_layer_count(f.tensors)}.")
        model = meta_model(args)
        params = model.named_weights()   # the fused projections as views of their row ranges
        names = {}
        for info in f.tensors.values():
            name = gguf_name(info.name)
            if name is None or name not in params:
                raise ModelLoadError(f"{f.path.name} holds tensor {info.name!r}, which is not a weight of a "
                                     f"{args.family} model with this metadata.")
            if info.shape != tuple(params[name].shape):
                raise ModelLoadError(f"tensor {info.name!r} in {f.path.name} has shape {info.shape}, but the "
                                     f"metadata implies {tuple(params[name].shape)}.")
            if info.offset + _nbytes(f, info, gguf) > len(f._map):
                raise ModelLoadError(f"{f.path.name}: tensor {info.name!r} runs past the end of the file "
                                     "(truncated GGUF).")
            names[info.name] = name
        missing = sorted(set(params) - set(names.values()))
        if missing:
            raise ModelLoadError(f"{f.path.name} lacks {len(missing)} weight(s) this model needs, e.g. {missing[0]!r}.")
        model = allocate(model, args, device, dtype, f.path.name)
        params = model.named_weights()
        permuted = {"wq": args.n_heads, "wk": args.n_kv_heads} if args.family == "llama" else {}
        for info in f.tensors.values():
            name = names[info.name]
            t = _dequantize(f, info, gguf)
            proj = name.split(".")[-2]
            if proj in permuted:   # weight [heads*hd, dim] or bias [heads*hd]
                t = unpermute_rope(t, permuted[proj])
            params[name].data.copy_(t)   # casts to the model dtype on the model device
    finally:
        f.close()
    model.eval()
    return model, args


# ---- tokenizer data --------------------------------------------------------------------------------

def tokenizer_metadata(path) -> dict:
    """The `tokenizer.*` metadata of a GGUF file (keys without the prefix), for Tokenizer.from_gguf."""
    f = read_gguf(path)
    try:
        return {k[len("tokenizer."):]: v for k, v in f.metadata.items() if k.startswith("tokenizer.")}
    finally:
        f.close()
