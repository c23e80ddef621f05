"""Random initialisation: `init_params` draws every tensor as the official PyTorch model does."""

import numpy as np
import pytest

from sam2_jax.build_sam import get_model_config, init_params
from sam2_jax.checkpoint.torch import params_to_state_dict
from bench.oracle import official_config_path, sam2_build, torch


@pytest.mark.parametrize("name", ["sam2.1_hiera_t", "sam2_hiera_s"])
def test_init_matches_official_distributions(name):
  torch.manual_seed(0)
  official = sam2_build.build_sam2_video_predictor(official_config_path(name), ckpt_path=None, device="cpu",
                                                   hydra_overrides_extra=["++model.image_size=256"])
  theirs = {k: v.detach().numpy() for k, v in official.state_dict().items()}
  ours = params_to_state_dict(init_params(get_model_config(name, image_size=256), seed=0))
  assert sorted(ours) == sorted(theirs)
  compared = 0
  for key, t in theirs.items():
    o = np.asarray(ours[key])
    assert o.shape == t.shape, key
    if t.size > 1 and t.std() == 0:  # constants (LayerNorms, zero-initialised embeddings, layer scales) are equal
      np.testing.assert_array_equal(o, t, err_msg=key)
      continue
    if key.endswith(".weight") and t.ndim >= 2 and f"{key[:-len('weight')]}bias" in theirs:
      # torch's kaiming_uniform(a=sqrt(5)) bound, also its bias's (with room for float32 rounding)
      bound = 1.000001 / np.sqrt(np.prod(t.shape[1:]))
      assert np.abs(o).max() <= bound and np.abs(t).max() <= bound, key
      assert np.abs(ours[f"{key[:-len('weight')]}bias"]).max() <= bound, key
    if t.size >= 256:  # two samples' std ratio and mean difference: bounds at 4-5 sigma of sampling noise
      assert 0.75 < o.std() / t.std() < 1.33, (key, o.std(), t.std())
      assert abs(o.mean() - t.mean()) < 0.35 * t.std(), (key, o.mean(), t.mean())
      compared += 1
  assert compared > 100


def test_grouped_draws_are_each_tensors_own():
  """Tensors drawn together (same distribution and size) get the values of one draw each with their own key."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from sam2_jax.modeling.initialization import torch_default_init  # pylint: disable=g-import-not-at-top
  params = {"a": {"kernel": jnp.zeros((4, 3)), "bias": jnp.zeros(3)},  # a's kernel and c's: size 12
            "b": {"kernel": jnp.zeros((3, 3, 3)), "bias": jnp.zeros(3)},  # a's bias and b's: other bounds
            "c": {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4)},
            "e": {"embedding": jnp.zeros((5, 3))}, "n": {"scale": jnp.ones(3)}}
  key = jax.random.key(7)
  paths = sorted([("a", "bias"), ("a", "kernel"), ("b", "bias"), ("b", "kernel"), ("c", "bias"), ("c", "kernel"),
                  ("e", "embedding"), ("n", "scale")])
  keys = dict(zip(paths, jax.random.split(key, len(paths))))
  bounds = {"a": 1 / np.sqrt(4), "b": 1 / np.sqrt(9), "c": 1 / np.sqrt(3)}
  got = jax.jit(torch_default_init)(params, key)
  for (module, name), k in keys.items():
    value = got[module][name]
    if name == "embedding":
      expected = jax.random.normal(k, (5, 3))
    elif name == "scale":
      expected = params[module][name]
    else:
      b = np.float32(bounds[module])
      expected = jax.random.uniform(k, params[module][name].shape, jnp.float32, -b, b)
    np.testing.assert_array_equal(value, expected, err_msg=f"{module}/{name}")
