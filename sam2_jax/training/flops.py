"""Matmul and convolution FLOPs that a jitted function really executes, following its control flow.

XLA's `cost_analysis()` counts the body of a loop once; a train step scans over frames and runs
correction rounds in loops and conditionals, so its count is far below the work done. This counter
walks the jaxpr instead: scans count every iteration, conditionals the branch their index selects,
with PRNG keys (and small values computed from them) known, so the prompt plan of the step is known.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

# Largest output (elements) of an operation whose inputs are known that the counter evaluates; larger
# for integer and boolean outputs (slot flags and key masks that decide which branches run).
_EVAL_LIMIT = 1 << 16
_EVAL_LIMIT_INTEGRAL = 1 << 22


def _dot_conv_flops(eqn) -> float:
  """FLOPs (2 per multiply-add) of a dot_general or convolution (transposed: only non-zero taps)."""
  if eqn.primitive.name == "dot_general":
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
    rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
    return 2.0 * np.prod(lhs, dtype=np.float64) * np.prod(rhs_free, dtype=np.float64)
  rhs, out = eqn.invars[1].aval.shape, eqn.outvars[0].aval.shape
  taps = np.prod(rhs, dtype=np.float64) / rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
  return 2.0 * np.prod(out, dtype=np.float64) * taps / np.prod(eqn.params["lhs_dilation"], dtype=np.float64)


class ExecutedFlops:
  """Matmul/conv FLOPs that running a jaxpr executes, following its control flow.

  Values are tracked concretely where they can be computed cheaply from the inputs marked known
  (here the PRNG key): small operations on known values are evaluated, everything else is only
  shaped. Scans count every iteration, conditionals the branch their (known) index selects, while
  loops the iterations their (known) predicate allows. A conditional or loop whose control value
  is unknown counts its costliest branch or one iteration and is tallied in `unresolved`.
  """

  def __init__(self):
    self.flops = 0.0
    self.unresolved = 0

  def run(self, jaxpr, consts: list, args: list) -> list:
    """Counts `jaxpr` on `args` (concrete values or None); returns its outputs likewise."""
    env = {}

    def read(v):
      return v.val if isinstance(v, jcore.Literal) else env.get(v)

    for v, x in zip(list(jaxpr.constvars) + list(jaxpr.invars), list(consts) + list(args)):
      env[v] = x
    for eqn in jaxpr.eqns:
      outs = self._eqn(eqn, [read(v) for v in eqn.invars])
      for v, x in zip(eqn.outvars, outs):
        if not isinstance(v, jcore.DropVar):
          env[v] = x
    return [read(v) for v in jaxpr.outvars]

  def _closed(self, closed, args: list) -> list:
    return self.run(closed.jaxpr, closed.consts, args)

  def _eqn(self, eqn, ins: list) -> list:
    name, params = eqn.primitive.name, eqn.params
    if name in ("dot_general", "conv_general_dilated"):
      self.flops += _dot_conv_flops(eqn)
    if name == "cond":
      return self._cond(params["branches"], ins[0], ins[1:])
    if name == "scan":
      return self._scan(params, ins)
    if name == "while":
      return self._while(params, ins)
    subs = [(k, params[k]) for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in params]
    if subs:  # pjit, checkpoint, custom_jvp_call, custom_vjp_call, closed_call
      sub = subs[0][1]
      if isinstance(sub, jcore.ClosedJaxpr):
        return self._closed(sub, ins)
      return self.run(sub, [], ins)
    integral = not any(jnp.issubdtype(v.aval.dtype, jnp.inexact) for v in eqn.outvars)
    if (any(x is None for x in ins) or
        sum(np.prod(v.aval.shape) for v in eqn.outvars) > (_EVAL_LIMIT_INTEGRAL if integral else _EVAL_LIMIT)):
      return [None] * len(eqn.outvars)
    out = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(params))
    return list(out) if eqn.primitive.multiple_results else [out]

  def _cond(self, branches, index, operands: list) -> list:
    if index is not None:
      return self._closed(branches[int(index)], operands)
    self.unresolved += 1
    start, costs = self.flops, []
    for branch in branches:
      self.flops = start
      self._closed(branch, operands)
      costs.append(self.flops - start)
    self.flops = start + max(costs)
    return [None] * len(branches[0].jaxpr.outvars)

  def _scan(self, params, ins: list) -> list:
    body, length = params["jaxpr"], params["length"]
    if "num_consts" in params:
      n_consts, n_carry = params["num_consts"], params["num_carry"]
    else:  # jax >= 0.11: the (consts, carry, xs) structure is a flat tree
      n_consts, n_carry = (len(part) for part in params["ft_in"].unpack()[:2])
    consts, carry, xs = ins[:n_consts], ins[n_consts:n_consts + n_carry], ins[n_consts + n_carry:]
    if all(x is None for x in carry + xs):  # every iteration sees the same known values: count one
      start = self.flops
      outs = self._closed(body, consts + carry + xs)
      self.flops = start + length * (self.flops - start)
      return [None] * len(outs)
    ys = []
    for i in range(length):
      t = length - 1 - i if params["reverse"] else i
      outs = self._closed(body, consts + carry + [None if x is None else x[t] for x in xs])
      carry = outs[:n_carry]
      ys.append((t, outs[n_carry:]))
    ys.sort(key=lambda item: item[0])
    stacked = [None if any(y[k] is None for _, y in ys) else jnp.stack([y[k] for _, y in ys])
               for k in range(len(ys[0][1]))]
    return carry + stacked

  def _while(self, params, ins: list) -> list:
    n_cond, n_body = params["cond_nconsts"], params["body_nconsts"]
    cond_consts, body_consts, carry = ins[:n_cond], ins[n_cond:n_cond + n_body], ins[n_cond + n_body:]
    while True:
      (pred,) = self._closed(params["cond_jaxpr"], cond_consts + carry)
      if pred is None:
        self.unresolved += 1
        self._closed(params["body_jaxpr"], body_consts + carry)
        return [None] * len(carry)
      if not bool(pred):
        return carry
      carry = self._closed(params["body_jaxpr"], body_consts + carry)


def step_flops(fn, *args) -> tuple[float, int]:
  """(executed matmul/conv FLOPs, unresolved control-flow count) of `fn(*args)`; PRNG keys are known."""
  closed = jax.make_jaxpr(fn)(*args)
  # The known values (PRNG keys and what derives from them) are evaluated op by op on the host CPU:
  # on an accelerator each eager op would be compiled on its own, which takes minutes for a train step.
  cpu = jax.local_devices(backend="cpu")[0]
  leaves = jax.tree.leaves(args)
  known = [jax.device_put(x, cpu) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else None for x in leaves]
  counter = ExecutedFlops()
  with jax.default_device(cpu):
    counter.run(closed.jaxpr, jax.device_put(closed.consts, cpu), known)
  return counter.flops, counter.unresolved


def matmul_rate(dtype: str = "float32", n: int = 1024, reps: int = 3) -> float:
  """Measured FLOP/s of an n x n matmul in `dtype` on the default device (best of `reps`): the MFU peak."""
  a, b = (jax.random.normal(k, (n, n), dtype) for k in jax.random.split(jax.random.key(0)))
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    dot(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n ** 3 / best
