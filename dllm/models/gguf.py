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

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dllm.errors import ModelLoadError
from dllm.models.config import ModelArgs

_MAGIC = b"GGUF"
# value type id -> struct format of a scalar (8 = string, 9 = array are handled apart)
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
SUPPORTED_ARCHS = ("llama", "qwen2")

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
            dims = tuple(c.scalar("<Q") for _ in range(n_dims))
            infos.append((name, dims, c.scalar("<I"), c.scalar("<Q")))
    except ModelLoadError:
        buf.close()
        raise
    except (struct.error, ValueError, OverflowError, MemoryError) as e:
        buf.close()
        raise ModelLoadError(f"{path.name} is not a valid GGUF file (truncated or corrupt header: {e}).") from None
    align = int(meta.get("general.alignment", 32)) or 32
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

    def need(key):
        v = f.get(key)
        if v is None:
            raise ModelLoadError(f"{f.path.name} lacks the metadata key {arch}.{key!s}.")
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ModelLoadError(f"{f.path.name} has a per-layer or non-numeric {arch}.{key}, which dllm does not support.")
        return v

    if f.get("expert_count"):
        raise ModelLoadError(f"{f.path.name} is a mixture-of-experts model, which dllm does not support.")
    scaling = f.get("rope.scaling.type")
    if (scaling not in (None, "none") or f.get("rope.scaling.factor", 1.0) not in (0.0, 1.0)
            or "rope_freqs.weight" in f.tensors):
        raise ModelLoadError(f"{f.path.name} uses RoPE scaling ({scaling or 'rope_freqs'}); dllm supports only plain RoPE.")
    dim, n_heads = int(need("embedding_length")), int(need("attention.head_count"))
    if isinstance(f.get("attention.head_count_kv"), list):
        raise ModelLoadError(f"{f.path.name} has a per-layer head count, which dllm does not support.")
    n_kv = int(f.get("attention.head_count_kv") or n_heads)
    if not n_heads or dim % n_heads or n_heads % n_kv:
        raise ModelLoadError(f"{f.path.name} has inconsistent attention shapes (dim {dim}, heads {n_heads}, kv heads {n_kv}).")
    hd = dim // n_heads
    for key in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        if f.get(key) not in (None, hd):
            raise ModelLoadError(f"{f.path.name} has {arch}.{key}={f.get(key)}, but dllm needs it equal to the "
                                 f"head dimension {hd}.")
    emb = f.tensors.get("token_embd.weight")
    if emb is None:
        raise ModelLoadError(f"{f.path.name} has no token_embd.weight tensor.")
    m = f.metadata
    eos = [m[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")
           if isinstance(m.get(k), int)]
    pad = m.get("tokenizer.ggml.padding_token_id")
    return ModelArgs(
        family=arch,
        vocab_size=int(emb.dims[1]) if len(emb.dims) == 2 else int(need("vocab_size")),
        dim=dim,
        n_layers=int(need("block_count")),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        intermediate_size=int(need("feed_forward_length")),
        norm_eps=float(f.get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(f.get("rope.freq_base", 10000.0)),
        max_seq_len=int(f.get("context_length", 2048)),
        mask_token_id=-1,
        eos_token_ids=tuple(dict.fromkeys(int(e) for e in eos)),
        pad_token_id=int(pad) if isinstance(pad, int) else None,
        qkv_bias="blk.0.attn_q.bias" in f.tensors,
        tie_embeddings="output.weight" not in f.tensors,
        rope_fp32=False,
        causal=True,
    )


def unpermute_rope(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation: [heads*hd, ...] interleaved -> rotate_half order.

    Per head, GGUF row 2i + c holds Hugging Face row c*hd/2 + i (c in {0, 1}, i < hd/2):
    view as [heads, hd/2, 2, ...], swap the two middle axes -> [heads, 2, hd/2, ...].
    """
    rest = w.shape[1:]
    return w.reshape(heads, -1, 2, *rest).transpose(1, 2).reshape(w.shape)


def _dequantize(f: GGUFFile, info: TensorInfo, gguf) -> torch.Tensor:
    """One tensor -> float32 torch tensor of shape info.shape."""
    try:
        qtype = gguf.GGMLQuantizationType(info.ggml_type)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise ModelLoadError(f"{f.path.name}: tensor {info.name!r} has ggml type {info.ggml_type}, which the "
                             "installed gguf package does not know.") from None
    ne0 = info.dims[0] if info.dims else 1
    if ne0 % block:
        raise ModelLoadError(f"{f.path.name}: tensor {info.name!r} rows of {ne0} values are not whole "
                             f"{qtype.name} blocks of {block}.")
    n = int(np.prod(info.dims)) if info.dims else 1
    data = f.raw(info, n // block * type_size)
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


def load_gguf_model(path, device="cpu", dtype=torch.float32):
    """(Transformer, ModelArgs) from a .gguf file, weights dequantised to float32 then cast to dtype."""
    from dllm.models.transformer import Transformer

    f = read_gguf(path)
    try:
        args = gguf_args(f)
        gguf = import_gguf()
        with torch.device("meta"):
            model = Transformer(args)
        model = model.to(dtype=dtype).to_empty(device=device)
        params = model.named_weights()   # the fused projections as views of their row ranges
        loaded: set[str] = set()
        permuted = {"wq": args.n_heads, "wk": args.n_kv_heads} if args.family == "llama" else {}
        for info in f.tensors.values():
            name = gguf_name(info.name)
            if name is None or name not in params:
                raise ModelLoadError(f"{f.path.name} holds tensor {info.name!r}, which is not a weight of a "
                                     f"{args.family} model with this metadata.")
            if info.shape != tuple(params[name].shape):
                raise ModelLoadError(f"tensor {info.name!r} in {f.path.name} has shape {info.shape}, but the "
                                     f"metadata implies {tuple(params[name].shape)}.")
            t = _dequantize(f, info, gguf)
            proj = name.split(".")[-2]
            if proj in permuted:   # weight [heads*hd, dim] or bias [heads*hd]
                t = unpermute_rope(t, permuted[proj])
            params[name].data.copy_(t)   # casts to the model dtype on the model device
            loaded.add(name)
        missing = sorted(set(params) - loaded)
        if missing:
            raise ModelLoadError(f"{f.path.name} lacks {len(missing)} weight(s) this model needs, e.g. {missing[0]!r}.")
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
