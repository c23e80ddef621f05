r"""Training configs: `python train.py --config=configs/train.py:<name> --workdir=DIR [--config.x=y]`.

- demo: synthetic data in the real SA-1B / SA-V formats (generated into the workdir), a small
  SAM 2 at 128x128 trained from scratch; runs on a laptop CPU in minutes.
- sa1b_sav_t, sa1b_sav_s, sa1b_sav_b+, sa1b_sav_l: joint SA-1B image + SA-V video training at
  1024 (set config.data.sources.{sa1b,sav}.paths to the ArrayRecord shards of data/*_to_arrayrecord.py).
- finetune_vos: the official MOSE fine-tune recipe (b+, lr 5e-6 / vision 3e-6, 8-frame clips,
  3 objects, drop path 0.1 in the trunk, from an official checkpoint: set config.init_checkpoint and
  config.data.sources.vos.paths).
"""

import ml_collections

from sam2_jax.data import pipeline
from sam2_jax.training import optimizer
from sam2_jax.training import prompt_simulation


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model_name = "sam2.1_hiera_b+"
  # bfloat16 matmuls and convolutions, float32 parameters: the official recipes train with bfloat16 autocast.
  # trunk.remat: the image encoder keeps only each block's input of every frame for the backward pass.
  c.model_overrides = ml_collections.ConfigDict({"image_size": 1024, "compute_dtype": "bfloat16",
                                                 "trunk": {"remat": True}})
  c.init_checkpoint = ""  # an official .pt or a converted directory; empty: random initialisation
  c.data = pipeline.get_config()
  c.optimizer = optimizer.default_config()
  c.prompts = prompt_simulation.default_config()
  c.seed = 123
  c.num_steps = 100_000
  c.log_every = 50
  c.count_flops = True  # count each batch shape's executed FLOPs once (tens of seconds) for the logged MFU
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.eval_every = 5000
  c.eval_data = ""            # a DAVIS-layout folder of held-out videos
  c.eval_max_videos = 8
  c.remat = True  # recompute each frame step in the backward pass: less memory, and faster on every size measured
  c.freeze_image_encoder = False
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  c.synthetic = ml_collections.ConfigDict({"generate": False})
  # XLA executables are cached here across runs (a restart skips the train step's compilation, minutes on a
  # GPU for the 1024 models); empty: no cache.
  c.compilation_cache_dir = "~/.cache/sam2_jax/xla"
  return c


def _sa1b_sav(size: str) -> ml_collections.ConfigDict:
  c = _base()
  c.model_name = f"sam2.1_hiera_{size}"
  c.optimizer.lr = 5e-4 if size in ("t", "s") else 4e-4
  c.optimizer.vision_lr = c.optimizer.lr
  c.optimizer.warmup_steps = 1000
  c.optimizer.clip_norm = 0.1
  # Global batches for 4 chips (v5p:2x2x1, or 4 GPUs): 2 images or one 8-frame clip per chip, which
  # `sam2_jax.aot_compile` fits in a v5p's HBM with b+; scale them with the number of chips.
  c.data.sources.sa1b.batch_size = 8
  c.data.sources.sav.batch_size = 4
  c.data.sources.sa1b.weight = 1.0
  c.data.sources.sav.weight = 1.0
  return c


def _finetune_vos() -> ml_collections.ConfigDict:
  c = _base()
  c.model_name = "sam2.1_hiera_b+"
  c.model_overrides.trunk.drop_path_rate = 0.1
  c.optimizer.lr, c.optimizer.vision_lr = 5e-6, 3e-6
  c.data.sources.sa1b.paths = ""
  c.data.sources.sav.paths = ""
  c.data.sources.vos = ml_collections.ConfigDict(dict(paths="", video=True, batch_size=8, weight=1.0))
  c.num_steps = 40 * 1000
  return c


def _demo() -> ml_collections.ConfigDict:
  c = _base()
  c.model_name = "sam2.1_hiera_t"
  c.model_overrides = ml_collections.ConfigDict({
      "image_size": 128,
      "trunk": {"embed_dim": 32, "num_heads": 1, "stages": (1, 1, 2, 1), "global_att_blocks": (3,),
                "window_spec": (8, 4, 8, 4)},
      # One memory-attention layer (the t config has four): a video step 11% cheaper than with two.
      "memory_attention": {"num_layers": 1, "dim_feedforward": 512, "dropout": 0.0},
      # One mask on tracked frames: trained from scratch for minutes, the three-mask output (each object's
      # loss on its best mask) does not specialise its slots and the IoU head picks poor ones.
      "multimask_output_for_tracking": False,
  })
  c.synthetic = ml_collections.ConfigDict(dict(generate=True, num_images=256, num_videos=96, num_eval_videos=16,
                                                size=128, num_frames=48, eval_num_frames=16))
  c.data.resolution = 128
  c.data.sources.sa1b.batch_size = 4
  c.data.sources.sav.batch_size = 2
  c.data.sources.sa1b.weight = 1.0
  c.data.sources.sav.weight = 3.0
  c.data.num_workers = 0
  c.data.augment.affine_degrees = 0.0
  c.data.augment.affine_shear = 0.0
  c.prompts.prob_to_use_pt_input = 0.0  # videos: the first-frame mask, as in the VOS evaluation; images: clicks
  c.optimizer.lr = c.optimizer.vision_lr = 2e-4
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_norm = 1.0
  c.optimizer.warmup_steps = 20
  # Whether memory reading is learned within the demo depends on the seed: it is with 1 (between steps 400 and 600),
  # not with 123 or 2 (README, Training).
  c.seed = 1
  c.num_steps = 800  # about 12.5 minutes on a 2-core CPU, data generation and evaluations included
  c.count_flops = False  # counting takes about 50 s of the demo's 15 minutes
  c.log_every = 10
  c.checkpoint_every = 200
  c.eval_every = 200
  c.eval_max_videos = 16
  return c


def get_config(name: str = "demo") -> ml_collections.ConfigDict:
  """The named training config (see the module docstring)."""
  if name == "demo":
    return _demo()
  if name == "finetune_vos":
    return _finetune_vos()
  if name.startswith("sa1b_sav_") and name[len("sa1b_sav_"):] in ("t", "s", "b+", "l"):
    return _sa1b_sav(name[len("sa1b_sav_"):])
  raise ValueError(f"Unknown training config {name!r}; expected demo, finetune_vos or sa1b_sav_{{t,s,b+,l}}.")
