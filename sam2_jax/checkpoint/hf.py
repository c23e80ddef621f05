"""Hugging Face transformers SAM 2 checkpoints (`Sam2VideoModel` / `Sam2Model` key layout) -> official state dicts.

transformers builds its checkpoints from the official ones with `convert_sam2_video_to_hf.py` (and
`convert_sam2_to_hf.py` for the image-only `Sam2Model`): renames only, every tensor keeps its official
shape and layout, except that the four point embeddings (1, 256) are stacked into one
`prompt_encoder.point_embed.weight` (4, 256) and the random-Fourier matrix is stored as both
`shared_image_embedding.positional_embedding` and `prompt_encoder.shared_embedding.positional_embedding`
(a `save_pretrained` file may hold just one of the tied pair). `to_official` inverts that mapping with one
full-key rule per tensor family; a key no rule matches is an error, so nothing is dropped silently.

`read_state_dict` reads any supported checkpoint as an official state dict: an official `.pt`, a
`.safetensors` file or a Hugging Face model folder (`model.safetensors` or a sharded
`model.safetensors.index.json`), in the official or the Hugging Face key layout. Safetensors files are
read with NumPy from the documented format (an 8-byte little-endian header size, a JSON header, the raw
little-endian tensor bytes); the `safetensors` package is not needed.
"""

import json
import os
import re
import struct
from typing import Any, Callable, Mapping

import ml_dtypes
import numpy as np

from sam2_jax.checkpoint import torch as torch_ckpt

_W = r"(weight|bias)"
POINT_EMBED = "prompt_encoder.point_embed.weight"
POSITIONAL = ("shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding")
_OFFICIAL_POSITIONAL = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_HF_PREFIXES = ("vision_encoder.", "prompt_encoder.", "mask_decoder.", "shared_image_embedding.")
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def _rules() -> list[tuple[re.Pattern, str | Callable[[re.Match], str]]]:
  """(full-key pattern of a Hugging Face key, official key template or function of the match)."""
  vb, tr = r"vision_encoder\.backbone\.", "image_encoder.trunk."
  dt, ot = r"mask_decoder\.transformer\.", "sam_mask_decoder.transformer."
  attn = r"(layers\.\d+\.(?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token)|final_attn_token_to_image)"
  ma, fuser = r"memory_attention\.layers\.(\d+)\.", r"memory_encoder\.memory_fuser\.layers\.(\d+)\."
  downsampler = r"memory_encoder\.mask_downsampler\."
  rules: list[tuple[str, Any]] = [
      # Hiera trunk and FPN neck.
      (rf"{vb}patch_embed\.projection\.{_W}", rf"{tr}patch_embed.proj.\1"),
      (rf"{vb}(pos_embed|pos_embed_window)", rf"{tr}\1"),
      (rf"{vb}blocks\.(\d+)\.layer_norm([12])\.{_W}", rf"{tr}blocks.\1.norm\2.\3"),
      (rf"{vb}blocks\.(\d+)\.mlp\.proj_in\.{_W}", rf"{tr}blocks.\1.mlp.layers.0.\2"),
      (rf"{vb}blocks\.(\d+)\.mlp\.proj_out\.{_W}", rf"{tr}blocks.\1.mlp.layers.1.\2"),
      (rf"{vb}blocks\.(\d+)\.(attn\.qkv|attn\.proj|proj)\.{_W}", rf"{tr}blocks.\1.\2.\3"),
      (rf"vision_encoder\.neck\.convs\.(\d+)\.{_W}", r"image_encoder.neck.convs.\1.conv.\2"),
      # Prompt encoder (point_embed and the positional matrix are handled in `to_official`).
      (r"prompt_encoder\.(no_mask_embed|not_a_point_embed)\.weight", r"sam_prompt_encoder.\1.weight"),
      # Mask decoder.
      (rf"mask_decoder\.upscale_conv1\.{_W}", r"sam_mask_decoder.output_upscaling.0.\1"),
      (rf"mask_decoder\.upscale_layer_norm\.{_W}", r"sam_mask_decoder.output_upscaling.1.\1"),
      (rf"mask_decoder\.upscale_conv2\.{_W}", r"sam_mask_decoder.output_upscaling.3.\1"),
      (r"mask_decoder\.(iou_token|mask_tokens|obj_score_token)\.weight", r"sam_mask_decoder.\1.weight"),
      (rf"mask_decoder\.(conv_s0|conv_s1)\.{_W}", r"sam_mask_decoder.\1.\2"),
      (rf"{dt}layers\.(\d+)\.mlp\.proj_in\.{_W}", rf"{ot}layers.\1.mlp.layers.0.\2"),
      (rf"{dt}layers\.(\d+)\.mlp\.proj_out\.{_W}", rf"{ot}layers.\1.mlp.layers.1.\2"),
      (rf"{dt}layers\.(\d+)\.layer_norm([1-4])\.{_W}", rf"{ot}layers.\1.norm\2.\3"),
      (rf"{dt}layer_norm_final_attn\.{_W}", rf"{ot}norm_final_attn.\1"),
      (rf"{dt}{attn}\.([qkv])_proj\.{_W}", rf"{ot}\1.\2_proj.\3"),
      (rf"{dt}{attn}\.o_proj\.{_W}", rf"{ot}\1.out_proj.\2"),
      # Memory attention.
      (rf"{ma}(self_attn|cross_attn_image)\.([qkv])_proj\.{_W}", r"memory_attention.layers.\1.\2.\3_proj.\4"),
      (rf"{ma}(self_attn|cross_attn_image)\.o_proj\.{_W}", r"memory_attention.layers.\1.\2.out_proj.\3"),
      (rf"{ma}(linear1|linear2)\.{_W}", r"memory_attention.layers.\1.\2.\3"),
      (rf"{ma}layer_norm([123])\.{_W}", r"memory_attention.layers.\1.norm\2.\3"),
      (rf"memory_attention\.layer_norm\.{_W}", r"memory_attention.norm.\1"),
      # Memory encoder: the mask downsampler's Sequential (conv, norm, activation) x 4 + final conv is split
      # into layers.i.{conv, layer_norm} (official indices 3i, 3i + 1) and final_conv (index 12).
      (rf"{downsampler}layers\.(\d+)\.conv\.{_W}",
       lambda m: f"memory_encoder.mask_downsampler.encoder.{3 * int(m[1])}.{m[2]}"),
      (rf"{downsampler}layers\.(\d+)\.layer_norm\.{_W}",
       lambda m: f"memory_encoder.mask_downsampler.encoder.{3 * int(m[1]) + 1}.{m[2]}"),
      (rf"{downsampler}final_conv\.{_W}", r"memory_encoder.mask_downsampler.encoder.12.\1"),
      (rf"{fuser}depthwise_conv\.{_W}", r"memory_encoder.fuser.layers.\1.dwconv.\2"),
      (rf"{fuser}pointwise_conv([12])\.{_W}", r"memory_encoder.fuser.layers.\1.pwconv\2.\3"),
      (rf"{fuser}layer_norm\.{_W}", r"memory_encoder.fuser.layers.\1.norm.\2"),
      (rf"{fuser}scale", r"memory_encoder.fuser.layers.\1.gamma"),
      (rf"memory_encoder\.projection\.{_W}", r"memory_encoder.out_proj.\1"),
      (rf"memory_encoder\.feature_projection\.{_W}", r"memory_encoder.pix_feat_proj.\1"),
      # Object pointers and the SAM2Base parameters.
      (rf"object_pointer_proj\.proj_in\.{_W}", r"obj_ptr_proj.layers.0.\1"),
      (rf"object_pointer_proj\.layers\.0\.{_W}", r"obj_ptr_proj.layers.1.\1"),
      (rf"object_pointer_proj\.proj_out\.{_W}", r"obj_ptr_proj.layers.2.\1"),
      (rf"temporal_positional_encoding_projection_layer\.{_W}", r"obj_ptr_tpos_proj.\1"),
      (rf"mask_downsample\.{_W}", r"mask_downsample.\1"),
      (r"no_memory_embedding", "no_mem_embed"),
      (r"no_memory_positional_encoding", "no_mem_pos_enc"),
      (r"no_object_pointer", "no_obj_ptr"),
      (r"occlusion_spatial_embedding_parameter", "no_obj_embed_spatial"),
      (r"memory_temporal_positional_encoding", "maskmem_tpos_enc"),
  ]
  # The prompt encoder's mask downscaling Sequential (conv, norm, act, conv, norm, act, conv).
  for hf_name, index in (("conv1", 0), ("layer_norm1", 1), ("conv2", 3), ("layer_norm2", 4), ("conv3", 6)):
    rules.append((rf"prompt_encoder\.mask_embed\.{hf_name}\.{_W}", rf"sam_prompt_encoder.mask_downscaling.{index}.\1"))
  # The 3-layer MLP heads: proj_in, layers.0, proj_out are the official layers.0, 1, 2.
  head = r"(iou_prediction_head|pred_obj_score_head|output_hypernetworks_mlps\.\d+)"
  for hf_name, index in (("proj_in", 0), (r"layers\.0", 1), ("proj_out", 2)):
    rules.append((rf"mask_decoder\.{head}\.{hf_name}\.{_W}", rf"sam_mask_decoder.\1.layers.{index}.\2"))
  return [(re.compile(pattern), template) for pattern, template in rules]


_RULES = _rules()


def official_key(hf_key: str) -> str | None:
  """The official key of a Hugging Face SAM 2 key other than point_embed / positional matrix (None: unknown)."""
  for pattern, template in _RULES:
    m = pattern.fullmatch(hf_key)
    if m:
      return template(m) if callable(template) else m.expand(template)
  return None


def is_hf_layout(keys) -> bool:
  """Whether a state dict's keys are in the Hugging Face transformers layout (vs the official one)."""
  return any(k.startswith(_HF_PREFIXES) for k in keys)


def to_official(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Maps a Hugging Face `Sam2VideoModel` state dict to the official SAM 2 state dict.

  Raises ValueError for unknown keys, a point_embed that is not (4, C), two positional matrices that
  differ, and an image-only (`Sam2Model`) checkpoint, which lacks the memory modules SAM 2 needs.
  """
  out, unknown = {}, []
  for key, value in state_dict.items():
    if key in POSITIONAL:
      continue
    if key == POINT_EMBED:
      value = np.asarray(value)
      if value.ndim != 2 or value.shape[0] != 4:
        raise ValueError(f"{POINT_EMBED} must have shape (4, C), got {value.shape}.")
      out.update({f"sam_prompt_encoder.point_embeddings.{i}.weight": value[i:i + 1] for i in range(4)})
      continue
    name = official_key(key)
    if name is None:
      unknown.append(key)
    else:
      out[name] = value
  if unknown:
    raise ValueError(f"Unknown keys in the Hugging Face SAM 2 checkpoint ({len(unknown)}): "
                     + ", ".join(sorted(unknown)))
  positional = [np.asarray(state_dict[k]) for k in POSITIONAL if k in state_dict]
  if positional:
    if len(positional) == 2 and not np.array_equal(*positional):
      raise ValueError(f"{POSITIONAL[0]} and {POSITIONAL[1]} differ; they must be the same (tied) tensor.")
    out[_OFFICIAL_POSITIONAL] = positional[0]
  if not any(k.startswith("memory_attention.") for k in out):
    raise ValueError("This is an image-only Hugging Face Sam2Model checkpoint: it has no memory attention, memory "
                     "encoder or object-pointer weights, which a SAM 2 model needs. Use a Sam2VideoModel checkpoint "
                     "(it holds all weights) or the official .pt.")
  return out


_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
           "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
           "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?")}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """All tensors of one `.safetensors` file as NumPy arrays (bfloat16 widened to float32)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"Checkpoint file {path!r} does not exist.")
  size = os.path.getsize(path)
  try:
    with open(path, "rb") as f:
      (header_size,) = struct.unpack("<Q", f.read(8))
      if header_size > size - 8:
        raise ValueError(f"header size {header_size} exceeds the file")
      header = json.loads(f.read(header_size))
    body = size - 8 - header_size
    data = np.memmap(path, np.uint8, mode="r", offset=8 + header_size) if body else np.zeros(0, np.uint8)
    out = {}
    for name, info in header.items():
      if name == "__metadata__":
        continue
      dtype, shape, (begin, end) = _DTYPES[info["dtype"]], tuple(info["shape"]), info["data_offsets"]
      if end - begin != int(np.prod(shape)) * dtype.itemsize or not 0 <= begin <= end <= len(data):
        raise ValueError(f"tensor {name!r} has inconsistent data offsets {begin}..{end}")
      value = np.array(data[begin:end].view(dtype).reshape(shape))
      out[name] = value.astype(np.float32) if dtype == _DTYPES["BF16"] else value
  except (struct.error, json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
    raise ValueError(f"Could not read {path!r} as a safetensors file: {e}") from e
  return out


def safetensors_files(path: str | os.PathLike) -> list[str] | None:
  """The safetensors files of a checkpoint path (a file, or a model folder), or None if it is not one."""
  path = os.fspath(path)
  if os.path.isdir(path):
    index = os.path.join(path, INDEX_FILE)
    if os.path.isfile(index):
      try:
        with open(index) as f:
          weight_map = json.load(f)["weight_map"]
      except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"Could not read the shard index {index!r}: {e}") from e
      return [os.path.join(path, name) for name in sorted(set(weight_map.values()))]
    single = os.path.join(path, SINGLE_FILE)
    return [single] if os.path.isfile(single) else None
  return [path] if path.endswith(".safetensors") else None


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The official state dict of an official `.pt`, a `.safetensors` file or a Hugging Face model folder."""
  files = safetensors_files(path)
  if files is None:
    state_dict = torch_ckpt.read_torch_checkpoint(path)
  else:
    state_dict = {}
    for file in files:
      state_dict.update(read_safetensors(file))
  return to_official(state_dict) if is_hf_layout(state_dict) else state_dict
