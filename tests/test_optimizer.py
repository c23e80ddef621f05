"""The SAM 2 optimizer: parameter groups vs the official rules on the official model, AdamW steps vs torch."""

import fnmatch
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sam2_jax.build_sam import abstract_params, get_model_config
from sam2_jax.checkpoint.torch import torch_key
from sam2_jax.training import optimizer as opt

torch = pytest.importorskip("torch")


def config(**overrides):
  cfg = opt.default_config()
  cfg.update(overrides)
  return cfg


def flat(tree):
  return {tuple(k.key for k in p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflat(d):
  out = {}
  for path, v in d.items():
    node = out
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = v
  return out


# ----------------------------------------------------------------------------------------------------------
# Parameter groups on the real model vs the official rules applied to the official model.


def official_groups(model, lr, vision_lr, weight_decay, layer_decay):
  """{name: (peak lr, weight decay)} by the official construct_optimizer + layer_decay_param_modifier rules."""
  names = [n for n, _ in model.named_parameters()]
  layer_norm_params = set()
  for module_name, module in model.named_modules():
    if type(module) is torch.nn.LayerNorm:  # the official map is keyed by the exact module class
      layer_norm_params |= {f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False)}
  trunk = model.image_encoder.trunk
  num_layers = trunk.get_num_layers() + 1
  decays = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
  out = {}
  for name in names:
    base = vision_lr if fnmatch.fnmatch(name, "image_encoder.*") else lr
    scale = decays[num_layers]
    if name.startswith("image_encoder.trunk"):
      scale = decays[trunk.get_layer_id(name)]
      if fnmatch.fnmatchcase(name, "*pos_embed*"):
        scale = 1.0
    no_decay = bool(fnmatch.filter([name], "*bias*")) or name in layer_norm_params
    out[name] = (base * scale, 0.0 if no_decay else weight_decay)
  return out


@pytest.mark.parametrize("name", ["sam2.1_hiera_t", "sam2_hiera_s"])
def test_param_groups_match_official_rules(name):
  from bench.oracle import build_official  # pylint: disable=g-import-not-at-top
  model, _ = build_official(name, 256)
  cfg = config(lr=5e-6, vision_lr=3e-6, layer_decay=0.9, weight_decay=0.1)
  expected = official_groups(model, cfg.lr, cfg.vision_lr, cfg.weight_decay, cfg.layer_decay)
  groups = {torch_key(p): g for p, g in flat(opt.param_groups(abstract_params(get_model_config(name, image_size=256)),
                                                              cfg)).items()}
  buffers = set(groups) - set(expected)
  assert buffers == set(opt.BUFFERS) and buffers <= set(model.state_dict())
  assert set(expected) <= set(groups)
  for key, (lr, wd) in expected.items():
    g = groups[key]
    assert g.trainable, key
    np.testing.assert_allclose(g.lr, lr, rtol=1e-12, err_msg=key)
    assert g.weight_decay == wd, key
  assert not any(groups[k].trainable for k in buffers)
  # isinstance agrees with the exact-type rule (no LayerNorm subclasses), and LayerNorm2d keeps decay.
  ln = {m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
  assert all(type(m) is torch.nn.LayerNorm for m in ln)
  assert groups["sam_mask_decoder.output_upscaling.1.weight"].weight_decay == 0.1
  assert groups["memory_attention.norm.weight"].weight_decay == 0.0
  depth = len(model.image_encoder.trunk.blocks)
  assert opt.trunk_depth(abstract_params(get_model_config(name, image_size=256))) == depth
  np.testing.assert_allclose(groups["image_encoder.trunk.patch_embed.proj.weight"].layer_scale, 0.9 ** (depth + 1))
  np.testing.assert_allclose(groups["image_encoder.trunk.blocks.0.attn.qkv.weight"].layer_scale, 0.9 ** depth)
  assert groups["image_encoder.trunk.pos_embed"].layer_scale == 1.0
  assert groups["image_encoder.neck.convs.0.conv.weight"].layer_scale == 1.0


def test_lr_scales_multiply_the_matching_params():
  params = abstract_params(get_model_config("sam2.1_hiera_t", image_size=256))
  base = {torch_key(p): g for p, g in flat(opt.param_groups(params, config())).items()}
  cfg = config(lr_scales=(("memory_encoder.*", 0.1), ("*.bias", 0.5)))
  scaled = {torch_key(p): g for p, g in flat(opt.param_groups(params, cfg)).items()}
  assert "memory_encoder.fuser.layers.0.dwconv.bias" in scaled  # a param that both patterns match
  for key, group in scaled.items():
    factor = (0.1 if key.startswith("memory_encoder.") else 1.0) * (0.5 if key.endswith(".bias") else 1.0)
    np.testing.assert_allclose(group.lr, base[key].lr * factor, rtol=1e-12, err_msg=key)
    assert (group.layer_scale, group.weight_decay) == (base[key].layer_scale, base[key].weight_decay)


def test_optimizer_traces_on_real_tree():
  params = abstract_params(get_model_config("sam2.1_hiera_t", image_size=256))
  for freeze in (False, True):
    tx = opt.make_optimizer(config(), params, total_steps=100, freeze_image_encoder=freeze)
    state = jax.eval_shape(tx.init, params)
    updates, _ = jax.eval_shape(tx.update, params, state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    n_state = sum(x.size for x in jax.tree.leaves(state))
    n_params = sum(x.size for x in jax.tree.leaves(params))
    n_encoder = sum(x.size for x in jax.tree.leaves(params["image_encoder"]))
    n_buffers = params["sam_prompt_encoder"]["pe_layer"]["positional_encoding_gaussian_matrix"].size
    expected = 2 * (n_params - n_buffers - (n_encoder if freeze else 0))
    assert expected <= n_state <= expected + 4  # Adam moments + step counters


# ----------------------------------------------------------------------------------------------------------
# Update rule vs torch.optim.AdamW with the same groups.


def small_tree(seed=0):
  rng = np.random.default_rng(seed)
  shapes = {
      ("image_encoder", "trunk", "pos_embed"): (1, 4, 2, 2),
      ("image_encoder", "trunk", "patch_embed", "proj", "kernel"): (3, 3, 2, 4),
      ("image_encoder", "trunk", "patch_embed", "proj", "bias"): (4,),
      ("image_encoder", "trunk", "blocks_0", "norm1", "scale"): (4,),
      ("image_encoder", "trunk", "blocks_0", "norm1", "bias"): (4,),
      ("image_encoder", "trunk", "blocks_0", "mlp", "layers_0", "kernel"): (4, 8),
      ("image_encoder", "trunk", "blocks_1", "mlp", "layers_0", "kernel"): (8, 4),
      ("image_encoder", "neck", "convs_0", "conv", "kernel"): (1, 1, 4, 4),
      ("sam_mask_decoder", "output_upscaling_1", "scale"): (4,),
      ("sam_mask_decoder", "output_upscaling_1", "bias"): (4,),
      ("sam_mask_decoder", "iou_token", "embedding"): (1, 4),
      ("obj_ptr_proj", "layers_0", "kernel"): (4, 4),
      ("sam_prompt_encoder", "pe_layer", "positional_encoding_gaussian_matrix"): (2, 4),
  }
  return unflat({p: rng.normal(size=s).astype(np.float32) for p, s in shapes.items()})


def torch_run(params, grads_seq, groups, schedule, clip_norm, betas, eps):
  """torch AdamW (one group per param) with clip_grad_norm_ and the lr set from the schedule each step."""
  keys = [k for k in flat(params) if flat(groups)[k].trainable]
  tp = {k: torch.tensor(np.array(flat(params)[k]), requires_grad=True) for k in keys}
  g = flat(groups)
  optim = torch.optim.AdamW([{"params": [tp[k]], "lr": g[k].lr, "weight_decay": g[k].weight_decay} for k in keys],
                            betas=betas, eps=eps)
  peak = [g[k].lr for k in keys]
  for step, grads in enumerate(grads_seq):
    for k in keys:
      tp[k].grad = torch.tensor(np.array(flat(grads)[k]))
    if clip_norm:
      torch.nn.utils.clip_grad_norm_(list(tp.values()), max_norm=clip_norm, norm_type=2)
    for group, lr in zip(optim.param_groups, peak):
      group["lr"] = lr * float(schedule(step))
    optim.step()
  return {k: v.detach().numpy() for k, v in tp.items()}


def jax_run(tx, params, grads_seq):
  state = tx.init(params)
  step = jax.jit(tx.update)
  for grads in grads_seq:
    updates, state = step(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize("grad_scale,steps,warmup", [(1.0, 1, 0), (1.0, 4, 0), (1e-3, 3, 2)])
def test_adamw_matches_torch(grad_scale, steps, warmup):
  params = small_tree(0)
  grads_seq = [jax.tree.map(lambda x: x * grad_scale, small_tree(i + 1)) for i in range(steps)]
  cfg = config(lr=1e-2, vision_lr=4e-3, weight_decay=0.1, layer_decay=0.8, clip_norm=0.1, b1=0.8, b2=0.95,
               eps=1e-6, warmup_steps=warmup)
  total = 10
  tx = opt.make_optimizer(cfg, params, total)
  groups = opt.param_groups(params, cfg)
  ours = flat(jax_run(tx, params, grads_seq))
  ref = torch_run(params, grads_seq, groups, opt.lr_factor_schedule(total, warmup, cfg.end_lr_factor),
                  cfg.clip_norm, (cfg.b1, cfg.b2), cfg.eps)
  for k, v in ref.items():
    np.testing.assert_allclose(np.asarray(ours[k]), v, atol=1e-6, rtol=0, err_msg=str(k))
    assert not np.allclose(v, flat(params)[k]), k  # every trainable param moved
  buffer = ("sam_prompt_encoder", "pe_layer", "positional_encoding_gaussian_matrix")
  np.testing.assert_array_equal(ours[buffer], flat(params)[buffer])


def test_clipping_matches_torch():
  tree = small_tree(3)
  leaves = [torch.tensor(np.array(x)) for x in jax.tree.leaves(tree)]
  norm = float(optax.tree.norm(tree))
  for max_norm in (0.1, norm * 0.999, norm * 2):
    tl = [t.clone() for t in leaves]
    for t in tl:
      t.grad = t.clone()
    torch.nn.utils.clip_grad_norm_(tl, max_norm=max_norm)
    ours, _ = opt.clip_by_global_norm(max_norm).update(tree, optax.EmptyState())
    for a, t in zip(jax.tree.leaves(ours), tl):
      np.testing.assert_allclose(np.asarray(a), t.grad.numpy(), rtol=1e-6, atol=1e-9)
  clipped, _ = opt.clip_by_global_norm(0.1).update(tree, optax.EmptyState())
  np.testing.assert_allclose(float(optax.tree.norm(clipped)), 0.1, rtol=1e-4)


def test_schedule_values():
  total, end = 100, 0.1
  s = opt.lr_factor_schedule(total, 0, end)
  for step in (0, 1, 25, 50, 99, 100, 150):
    where = min(step / total, 1.0)  # fvcore CosineParamScheduler at the official `where`
    np.testing.assert_allclose(float(s(step)), end + 0.5 * (1 - end) * (1 + math.cos(math.pi * where)), rtol=1e-6)
  w = opt.lr_factor_schedule(total, 10, end)
  np.testing.assert_allclose([float(w(i)) for i in (0, 5, 10)], [0.0, 0.5, 1.0], atol=1e-7)
  np.testing.assert_allclose(float(w(55)), end + 0.5 * (1 - end), rtol=1e-6)
  np.testing.assert_allclose(float(w(total)), end, rtol=1e-6)
  vals = np.array([float(w(i)) for i in range(10, total)])
  assert np.all(np.diff(vals) <= 0)
  with pytest.raises(ValueError, match="warmup"):
    opt.lr_factor_schedule(10, 10)


def test_frozen_image_encoder():
  """Zero updates and no state for image_encoder; its gradients do not enter the clipping norm."""
  params = small_tree(0)
  grads = small_tree(1)
  cfg = config(lr=1e-2, vision_lr=4e-3)
  tx = opt.make_optimizer(cfg, params, 10, freeze_image_encoder=True)
  state = tx.init(params)
  updates, _ = jax.jit(tx.update)(grads, state, params)
  for path, u in flat(updates).items():
    frozen = path[0] == "image_encoder" or path[-1] == "positional_encoding_gaussian_matrix"
    assert np.all(np.asarray(u) == 0) == frozen, path
  n_state = sum(x.size for x in jax.tree.leaves(state))
  trainable = sum(v.size for p, v in flat(params).items()
                  if p[0] != "image_encoder" and p[-1] != "positional_encoding_gaussian_matrix")
  assert n_state <= 2 * trainable + 4
  # Same updates as unfrozen training where the encoder has zero gradient and no weight decay effect.
  zero_encoder = dict(grads, image_encoder=jax.tree.map(jnp.zeros_like, grads["image_encoder"]))
  tx_open = opt.make_optimizer(config(lr=1e-2, vision_lr=4e-3), params, 10)
  open_updates, _ = tx_open.update(zero_encoder, tx_open.init(params), params)
  for path, u in flat(updates).items():
    if path[0] != "image_encoder":
      np.testing.assert_allclose(np.asarray(u), np.asarray(flat(open_updates)[path]), rtol=1e-6, atol=1e-12)
