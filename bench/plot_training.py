r"""Plots loss and J&F over steps from a training run's metrics.jsonl.

  python -m bench.plot_training --workdir=/tmp/sam2_demo --output=docs/demo_curve.png
"""

import json
import os

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir with metrics.jsonl.")
_OUTPUT = flags.DEFINE_string("output", "docs/demo_curve.png", "PNG to write.")


def main(argv):
  del argv
  with open(os.path.join(_WORKDIR.value, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  train = [r for r in rows if "loss" in r]
  evals = [r for r in rows if "eval/J&F" in r]
  fig, (ax_loss, ax_jf) = plt.subplots(1, 2, figsize=(10, 3.5))
  ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train])
  ax_loss.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
  ax_jf.plot([r["step"] for r in evals], [r["eval/J&F"] for r in evals], "o-", label="SAM 2 (trained)")
  ax_jf.plot([r["step"] for r in evals], [r["eval/copy_first_frame_J&F"] for r in evals], "s--",
             label="copy first frame")
  ax_jf.set(xlabel="step", ylabel="J&F (%)", title="held-out synthetic videos")
  ax_jf.legend()
  fig.tight_layout()
  fig.savefig(_OUTPUT.value, dpi=80)


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
