"""`python -m sam2_jax.aot_compile`: the demo's train step compiled ahead of time for a TPU topology on this CPU
machine (libtpu's compiler, no TPU), its memory against the chip's HBM, and its errors.

libtpu lives in a folder of its own (`.libtpu` in the repository, or $SAM2_JAX_LIBTPU_DIR), put on PYTHONPATH for
these subprocesses only: `pip install --target .libtpu "libtpu==0.0.42.*"` (as .ci/run does).
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBTPU = os.environ.get("SAM2_JAX_LIBTPU_DIR", os.path.join(ROOT, ".libtpu"))
# The demo config at a size that compiles quickly, its video batches only, on 4 devices.
SMALL = ["--config=configs/train.py:demo", "--config.model_overrides.image_size=64", "--config.data.resolution=64",
         "--config.data.num_frames=2", "--config.prompts.num_correction_pt_per_frame=1",
         "--config.data.sources.sa1b.weight=0", "--config.data.sources.sav.batch_size=4"]
LINE = (r"aot_compile: topology=(\S+) devices=(\d+) compile_s=[\d.]+ memory_per_device_gib=([\d.]+) "
        r"hbm_gib=(\S+) fits=(yes|no)")


def _run(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
  if not os.path.isdir(os.path.join(LIBTPU, "libtpu")):
    pytest.fail(f"No libtpu in {LIBTPU}: pip install --target {LIBTPU} 'libtpu==0.0.42.*' (see .ci/run).")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([LIBTPU, ROOT]))
  command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "sam2_jax.aot_compile", *args]
  return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)


def test_topologies_resolve():
  run = _run(code="from sam2_jax import aot_compile\n"
                  "for name in ('v5e:2x2', 'v5p:2x2x1', 'v6e:2x2'):\n"
                  "  devices = aot_compile.topology_devices(name)\n"
                  "  print(name, len(devices), aot_compile.HBM_GIB[devices[0].device_kind])")
  assert run.returncode == 0, run.stderr[-3000:]
  assert re.findall(r"^(v\S+) (\d+) (\d+)$", run.stdout, re.M) == [
      ("v5e:2x2", "4", "16"), ("v5p:2x2x1", "4", "95"), ("v6e:2x2", "4", "32")], run.stdout


def test_demo_step_compiles_and_fits():
  run = _run(*SMALL, "--topology=v5e:2x2", "--config.mesh.fsdp=2")
  assert run.returncode == 0, run.stderr[-3000:]
  last = run.stdout.strip().splitlines()[-1]
  match = re.fullmatch(LINE, last)
  assert match, run.stdout
  topology, devices, memory, hbm, fits = match.groups()
  assert (topology, devices, hbm, fits) == ("v5e:2x2", "4", "16", "yes"), last
  assert 0.001 < float(memory) < 16, last


def test_the_report_says_whether_the_step_fits():
  # In a process of its own: the module defines absl flags (`--config`) that other programs' modules define too.
  run = _run(code="from sam2_jax import aot_compile\n"
                  "print(aot_compile.fit_report('v5e:2x2', 4, 12.34, 20 * 2**30, 16, 'TPU v5 lite'))\n"
                  "print(aot_compile.fit_report('v5p:2x2x1', 4, 1.0, 2**30, 95, 'TPU v5'))\n"
                  # What libtpu 0.0.42 raised for sa1b_sav_b+ with 64 images and 16 clips on v5p:2x2x1.
                  "print(aot_compile.compiler_refusal('RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory "
                  "required for HLO temporaries (422.92G) exceeds available HBM (95.74G).'))\n"
                  "print(aot_compile.compiler_refusal('INVALID_ARGUMENT: something else (1.0G)'))")
  assert run.returncode == 0, run.stderr[-3000:]
  assert run.stdout.splitlines() == [
      str(("aot_compile: topology=v5e:2x2 devices=4 compile_s=12.3 memory_per_device_gib=20.00 hbm_gib=16 fits=no",
           "error: the train step needs 20.00 GiB per device and the topology's devices (TPU v5 lite) have 16 GiB: "
           "lower the batch sizes, shard the state over more devices (config.mesh.fsdp) or use a larger topology.")),
      str(("aot_compile: topology=v5p:2x2x1 devices=4 compile_s=1.0 memory_per_device_gib=1.00 hbm_gib=95 fits=yes",
           None)), "(422.92, 95.74)", "None"], run.stdout


@pytest.mark.parametrize("args, expected", [
    (["--topology=v9z:2x2"], r"error: --topology 'v9z:2x2' is not a TPU topology libtpu knows \(.*\); expected e\.g\. "
                             r"v5e:2x2, v5p:2x2x1 or v6e:2x2\."),
    (["--topology=v5e:2x2", "--config.data.sources.sav.batch_size=2"],
     r"error: config\.data\.sources\.sav\.batch_size \(2\) must be a multiple of the 4 devices of v5e:2x2\."),
    (["--topology=v5e:2x2", "--config.mesh.fsdp=3"], r"error: fsdp=3 does not divide the 4 devices\."),
])
def test_bad_input(args, expected):
  run = _run(*SMALL, *args)
  assert run.returncode == 2, run.stderr[-3000:]
  errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and re.fullmatch(expected, errors[0]), run.stderr[-3000:]


def test_without_libtpu_says_how_to_install_it():
  run = subprocess.run([sys.executable, "-m", "sam2_jax.aot_compile", *SMALL, "--topology=v5e:2x2"],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
  assert run.returncode == 2, run.stderr[-3000:]
  errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and re.fullmatch(
      r"error: --topology 'v5e:2x2': no TPU compiler \(.*\); pip install --target DIR \"libtpu==0\.0\.42\.\*\" and put "
      r"DIR on PYTHONPATH\.", errors[0]), run.stderr[-3000:]
