"""Hugging Face transformers SAM 2 checkpoints: the HF key layout (safetensors) back to the official params.

No real HF checkpoint is available offline, so `to_hf` below re-implements the forward conversion of
transformers' `convert_sam2_video_to_hf.py` (`replace_keys`: ordered substring renames, then the
regex-guided MLP / downsampler renames, the tied positional matrix and the stacked point embeddings),
written independently of `sam2_jax.checkpoint.hf`, which implements the inverse. What is checked: that
the inverse undoes these rules exactly for all eight configs and the params equal those from the
official state dict; not that a file saved by transformers itself loads (none can be made here).
"""

import json
import re
import struct

import jax
import numpy as np
import pytest

from sam2_jax.configs import CONFIG_NAMES
from sam2_jax import build_sam2
from sam2_jax.build_sam import abstract_params, get_model_config, params_from_state_dict
from sam2_jax.checkpoint import hf
from sam2_jax.checkpoint import torch as torch_ckpt
from sam2_jax.convert import convert
from bench.oracle import build_official

# transformers' KEYS_TO_MODIFY_MAPPING, applied in this order, each as a plain substring replacement.
RENAMES = [
    ("iou_prediction_head.layers.0", "iou_prediction_head.proj_in"),
    ("iou_prediction_head.layers.1", "iou_prediction_head.layers.0"),
    ("iou_prediction_head.layers.2", "iou_prediction_head.proj_out"),
    ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
    ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
    ("mask_downscaling.0", "mask_embed.conv1"), ("mask_downscaling.1", "mask_embed.layer_norm1"),
    ("mask_downscaling.3", "mask_embed.conv2"), ("mask_downscaling.4", "mask_embed.layer_norm2"),
    ("mask_downscaling.6", "mask_embed.conv3"),
    ("dwconv", "depthwise_conv"), ("pwconv", "pointwise_conv"), ("fuser", "memory_fuser"),
    ("point_embeddings", "point_embed"),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("obj_ptr_tpos_proj", "temporal_positional_encoding_projection_layer"),
    ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
    ("sam_prompt_encoder", "prompt_encoder"), ("sam_mask_decoder", "mask_decoder"),
    ("maskmem_tpos_enc", "memory_temporal_positional_encoding"), ("gamma", "scale"),
    ("image_encoder.neck", "vision_encoder.neck"), ("image_encoder", "vision_encoder.backbone"),
    ("neck.0", "neck.conv1"), ("neck.1", "neck.layer_norm1"), ("neck.2", "neck.conv2"), ("neck.3", "neck.layer_norm2"),
    ("pix_feat_proj", "feature_projection"), ("patch_embed.proj", "patch_embed.projection"),
    ("no_mem_embed", "no_memory_embedding"), ("no_mem_pos_enc", "no_memory_positional_encoding"),
    ("obj_ptr", "object_pointer"), (".norm", ".layer_norm"), ("trunk.", ""), ("out_proj", "o_proj"),
]
THREE_LAYERS = {0: "proj_in", 1: "layers.0", 2: "proj_out"}


def hf_key(key: str) -> str:
  """transformers' renaming of one official key."""
  for old, new in RENAMES:
    if old in key:
      key = key.replace(old, new)
  if m := re.match(r"vision_encoder.backbone.blocks.(\d+).mlp.layers.(\d+).*", key):
    key = key.replace(f"layers.{m[2]}", ["proj_in", "proj_out"][int(m[2])])
  if m := re.match(r"mask_decoder.transformer.layers.(\d+).mlp.layers.(\d+).*", key):
    key = key.replace(f"mlp.layers.{m[2]}", ["mlp.proj_in", "mlp.proj_out"][int(m[2])])
  if m := re.match(r"mask_decoder.pred_obj_score_head.layers.(\d+).*", key):
    key = key.replace(f"layers.{m[1]}", THREE_LAYERS[int(m[1])])
  if m := re.match(r".*.output_hypernetworks_mlps.(\d+).layers.(\d+).*", key):
    key = key.replace(f"layers.{m[2]}", THREE_LAYERS[int(m[2])])
  if re.match(r"vision_encoder.neck.convs.(\d+).conv", key):
    key = key.replace(".conv.", ".")
  if re.match(r"memory_encoder.o_proj.*", key):
    key = key.replace(".o_proj.", ".projection.")
  if m := re.match(r"object_pointer_proj.layers.(\d+).*", key):
    key = key.replace(f"layers.{m[1]}", THREE_LAYERS[int(m[1])])
  if m := re.match(r"memory_encoder.mask_downsampler.encoder.(\d+).*", key):
    n = int(m[1])
    new = "final_conv" if n == 12 else f"layers.{n // 3}.conv" if n % 3 == 0 else f"layers.{n // 3}.layer_norm"
    key = key.replace(f"encoder.{n}", new)
  return key


def to_hf(official: dict, tied_copy: bool = True) -> dict:
  """An official state dict in the Sam2VideoModel layout."""
  out = {hf_key(k): v for k, v in official.items()}
  positional = out["prompt_encoder.shared_embedding.positional_embedding"]
  out["shared_image_embedding.positional_embedding"] = positional
  if not tied_copy:  # what save_pretrained may keep of the tied pair
    del out["prompt_encoder.shared_embedding.positional_embedding"]
  out["prompt_encoder.point_embed.weight"] = np.concatenate(
      [out.pop(f"prompt_encoder.point_embed.{i}.weight") for i in range(4)], axis=0)
  return out


def write_safetensors(path, tensors: dict) -> str:
  """The safetensors format written by hand: u64 header size, JSON header, raw little-endian data."""
  codes = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16"}
  header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
  for name, value in tensors.items():
    data = np.ascontiguousarray(value).tobytes()
    header[name] = {"dtype": codes[value.dtype], "shape": list(value.shape),
                    "data_offsets": [offset, offset + len(data)]}
    chunks.append(data)
    offset += len(data)
  encoded = json.dumps(header).encode()
  encoded += b" " * (-len(encoded) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))
  return str(path)


@pytest.fixture(scope="module")
def official_t():
  return build_official("sam2.1_hiera_t", image_size=256)[1]


def _official_keys(name):
  shapes = abstract_params(get_model_config(name, image_size=256))
  return torch_ckpt.params_to_state_dict(jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes))


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_hf_key_maps_back(name):
  official = _official_keys(name)
  hf_keys = set(to_hf(official))
  assert hf.is_hf_layout(hf_keys) and not hf.is_hf_layout(official)
  singles = hf_keys - {hf.POINT_EMBED, *hf.POSITIONAL}
  back = {k: hf.official_key(k) for k in singles}
  assert None not in back.values(), sorted(k for k, v in back.items() if v is None)  # no leftovers
  assert len(set(back.values())) == len(singles)  # one to one
  assert sorted(hf.to_official(to_hf(official))) == sorted(official)


def test_safetensors_to_params_exact(tmp_path, official_t):
  path = write_safetensors(tmp_path / "model.safetensors", to_hf(official_t))
  state_dict = hf.read_state_dict(path)
  assert set(state_dict) == set(official_t)
  for key, value in official_t.items():
    np.testing.assert_array_equal(state_dict[key], value, err_msg=key)
  config = get_model_config("sam2.1_hiera_t", image_size=256)
  expected = jax.tree_util.tree_leaves_with_path(params_from_state_dict(official_t, config))
  model = build_sam2(checkpoint=tmp_path, image_size=256)  # the HF model folder
  assert model.config.name == "sam2.1_hiera_t"
  got = dict(jax.tree_util.tree_leaves_with_path(model.params))
  assert len(got) == len(expected)
  for path_, value in expected:
    np.testing.assert_array_equal(np.asarray(got[path_]), value, err_msg=jax.tree_util.keystr(path_))

  out = tmp_path / "converted"
  assert convert(path, str(out)) == "sam2.1_hiera_t"
  reloaded = build_sam2(checkpoint=out, image_size=256)
  for path_, value in expected:
    np.testing.assert_array_equal(np.asarray(dict(jax.tree_util.tree_leaves_with_path(reloaded.params))[path_]), value)


def test_sharded_folder_half_precision_and_one_tied_copy(tmp_path, official_t):
  tensors = {k: v.astype(np.float16) for k, v in to_hf(official_t, tied_copy=False).items()}
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[:200], "model-00002-of-00002.safetensors": names[200:]}
  for file, keys in shards.items():
    write_safetensors(tmp_path / file, {k: tensors[k] for k in keys})
  index = {"metadata": {}, "weight_map": {k: file for file, keys in shards.items() for k in keys}}
  (tmp_path / hf.INDEX_FILE).write_text(json.dumps(index))
  state_dict = hf.read_state_dict(tmp_path)
  assert set(state_dict) == set(official_t)
  for key, value in official_t.items():
    np.testing.assert_array_equal(state_dict[key], value.astype(np.float16), err_msg=key)


def test_errors(tmp_path, official_t):
  tensors = to_hf(official_t)
  with pytest.raises(ValueError, match=r"Unknown keys .*\(1\): vision_encoder.backbone.extra.weight"):
    hf.to_official({**tensors, "vision_encoder.backbone.extra.weight": np.zeros(3, np.float32)})
  differing = dict(tensors, **{hf.POSITIONAL[0]: tensors[hf.POSITIONAL[0]] + 1})
  with pytest.raises(ValueError, match="differ"):
    hf.to_official(differing)
  image_only = {k: v for k, v in tensors.items() if not re.match(r"memory_|object_pointer|mask_downsample", k)}
  with pytest.raises(ValueError, match="image-only"):
    hf.to_official(image_only)
  broken = tmp_path / "broken.safetensors"
  broken.write_bytes(struct.pack("<Q", 1000) + b"{}")
  with pytest.raises(ValueError, match="as a safetensors file"):
    hf.read_state_dict(broken)
