"""The executed-FLOP counter: loops count every iteration, conditionals the branch the PRNG key picks."""

import jax
import jax.numpy as jnp

from sam2_jax.training import flops


def test_scan_counts_every_iteration_and_the_taken_branch():
  a = jnp.ones((32, 32))

  def fn(key, x):
    def body(carry, _):
      return carry @ a, None
    y, _ = jax.lax.scan(body, x, None, length=10)
    pick = (jax.random.uniform(key) < 0.5).astype(jnp.int32)
    return jax.lax.switch(pick, [lambda v: v, lambda v: (v @ a) @ a], y)

  per_matmul = 2 * 32 ** 3
  for seed in range(6):
    key = jax.random.key(seed)
    taken = int(jax.random.uniform(key) < 0.5)
    counted, unresolved = flops.step_flops(fn, key, jnp.ones((32, 32)))
    assert unresolved == 0
    assert counted == per_matmul * (10 + 2 * taken), (seed, counted)


def test_unknown_condition_counts_the_costlier_branch():
  a = jnp.ones((16, 16))
  fn = lambda p, x: jax.lax.cond(p, lambda v: v @ a, lambda v: v, x)
  counted, unresolved = flops.step_flops(fn, jnp.array(True), jnp.ones((16, 16)))
  assert unresolved == 1 and counted == 2 * 16 ** 3


def test_a_large_known_key_mask_decides_which_key_blocks_count():
  """The CPU set's masked attention skips blocks without a valid key; a known mask resolves every skip."""
  from sam2_jax.modeling import kernels

  b, tq, tk, block, d = 3, 1024, 8 * 4096, 4096, 8
  valid_blocks = 3
  mask = jnp.broadcast_to(jnp.arange(tk) < valid_blocks * block, (b, tk))  # 98,304 flags
  q, k = jax.ShapeDtypeStruct((b, tq, 1, d), jnp.float32), jax.ShapeDtypeStruct((b, tk, 1, d), jnp.float32)
  fn = lambda mask, q, k, v: kernels.attention(q, k, v, "cpu", key_mask=mask, key_block=block)
  closed = jax.make_jaxpr(fn)(mask, q, k, k)
  counter = flops.ExecutedFlops()
  counter.run(closed.jaxpr, closed.consts, [mask, None, None, None])  # the mask known, the rest shapes
  assert counter.unresolved == 0
  assert counter.flops == 2 * (2 * b * tq * valid_blocks * block * d)  # scores and values, valid blocks only
