"""Bad input to the `data/` converters: all-or-nothing shards from `records.write_shards`, and every CLI
failure as one `error: ...` line with exit status 2 (real subprocesses), leaving no complete-looking output."""

import json
import os
import re
import subprocess
import sys

import pytest

from data import synthetic
from sam2_jax.data import records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32  # synthetic.MIN_SIZE: the smallest inputs the generator makes.


def tiny_record(item: str) -> records.ClipRecord | None:
  """A 1-object record for "ok", None for "empty", ValueError for "bad", OSError for "unreadable"."""
  if item == "bad":
    raise ValueError("bad item: cannot decode it")
  if item == "unreadable":
    raise OSError(f"[Errno 13] Permission denied: {item!r}")
  if item == "empty":
    return None
  return records.ClipRecord(source="sa1b", id=item, height=2, width=2, frames=[b"jpeg"], frame_indices=[0],
                            object_ids=[1], masks=[[records.encode_rle([[True, False], [False, False]])]])


def written(folder) -> list[str]:
  """Shard files (complete-looking or temporary) in `folder`, which may not exist."""
  return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# ------------------------------------------------------------------------------------------------------------
# records.write_shards


@pytest.mark.parametrize("num_workers", [0, 2])
def test_write_shards_bad_item_in_last_shard_leaves_nothing(tmp_path, num_workers):
  out = tmp_path / "out"
  with pytest.raises(ValueError, match="bad item: cannot decode it"):
    records.write_shards(["a", "b", "c", "bad"], tiny_record, str(out), "x", 2, num_workers=num_workers,
                         progress=False)
  assert written(out) == []  # Neither shard 1 (complete when the error came) nor a temporary file.
  stats = records.write_shards(["a", "b", "c", "d"], tiny_record, str(out), "x", 2, num_workers=num_workers,
                               progress=False)
  assert written(out) == ["x-00000-of-00002.array_record", "x-00001-of-00002.array_record"]
  assert stats.written == 4


def test_write_shards_failed_rename_removes_the_renamed_shards(tmp_path, monkeypatch):
  out = tmp_path / "out"
  real_replace, calls = os.replace, []

  def replace(src, dst):
    calls.append(dst)
    if len(calls) == 2:
      raise OSError(f"[Errno 28] No space left on device: {dst!r}")
    real_replace(src, dst)

  monkeypatch.setattr(os, "replace", replace)
  with pytest.raises(OSError, match="No space left"):
    records.write_shards(["a", "b"], tiny_record, str(out), "x", 2, progress=False)
  assert len(calls) == 2 and written(out) == []


def test_write_shards_refuses_to_write_no_record(tmp_path):
  out = tmp_path / "out"
  with pytest.raises(ValueError, match=r"No records written to .*: of 3 inputs, 3 without objects were dropped and 0 "
                     "bad inputs skipped"):
    records.write_shards(["empty"] * 3, tiny_record, str(out), "x", 2, progress=False)
  assert written(out) == []
  with pytest.raises(ValueError, match=r"of 3 inputs, 1 without objects were dropped and 2 bad inputs skipped "
                     r"\(first: bad item"):
    records.write_shards(["bad", "empty", "unreadable"], tiny_record, str(out), "x", 2, skip_errors=True,
                         progress=False)
  assert written(out) == []


def test_write_shards_skips_unreadable_inputs(tmp_path):
  stats = records.write_shards(["a", "unreadable", "b"], tiny_record, str(tmp_path), "x", 1, skip_errors=True,
                               progress=False)
  assert stats.written == 2 and len(stats.errors) == 1 and "Permission denied: 'unreadable'" in stats.errors[0]
  with pytest.raises(ValueError, match="Permission denied: 'unreadable'"):  # Bad input, as any other.
    records.write_shards(["a", "unreadable"], tiny_record, str(tmp_path / "y"), "x", 1, progress=False)


def test_write_shards_bad_arguments(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(ValueError, match=r"Cannot create the output folder .*file/out.*: Not a directory"):
    records.write_shards(["a"], tiny_record, str(tmp_path / "file" / "out"), "x", 1, progress=False)
  with pytest.raises(ValueError, match="num_shards must be >= 1, got 0"):
    records.write_shards(["a"], tiny_record, str(tmp_path), "x", 0, progress=False)
  with pytest.raises(ValueError, match="num_workers must be >= 0, got -1"):
    records.write_shards(["a"], tiny_record, str(tmp_path), "x", 1, num_workers=-1, progress=False)
  with pytest.raises(ValueError, match="must be a plain file name prefix"):
    records.write_shards(["a"], tiny_record, str(tmp_path), "sub/x", 1, progress=False)
  with pytest.raises(ValueError, match="No input items"):
    records.write_shards([], tiny_record, str(tmp_path), "x", 1, progress=False)
  assert written(tmp_path) == ["file"]


def test_write_shards_refuses_shards_of_another_shard_count(tmp_path):
  records.write_shards(["a", "b", "c"], tiny_record, str(tmp_path), "x", 3, progress=False)
  records.write_shards(["a", "b", "c"], tiny_record, str(tmp_path), "x", 3, progress=False)  # Same count: replaced.
  records.write_shards(["a"], tiny_record, str(tmp_path), "y", 1, progress=False)  # Another name.
  with pytest.raises(ValueError, match=r"already holds 3 'x' shards .*\(x-00000-of-00003\.array_record, \.\.\.\)"):
    records.write_shards(["a", "b"], tiny_record, str(tmp_path), "x", 2, progress=False)
  assert len(written(tmp_path)) == 4


# ------------------------------------------------------------------------------------------------------------
# The converter CLIs


def run_script(script: str, *args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(REPO, "data", script), *map(str, args)], capture_output=True,
                        text=True, cwd=REPO, timeout=300)


def assert_error(result: subprocess.CompletedProcess, pattern: str, output_dir=None) -> None:
  """Exit status 2 with exactly one `error:` line matching `pattern`, no traceback, and no file in `output_dir`."""
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert result.returncode == 2, result.stderr
  assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
  assert re.search(pattern, errors[0]), errors[0]
  if output_dir is not None:
    assert written(output_dir) == []


@pytest.fixture(name="sa1b_dir")
def fixture_sa1b_dir(tmp_path):
  synthetic.write_sa1b(str(tmp_path / "sa1b"), 2, SIZE, SIZE)
  return tmp_path / "sa1b"


def _no_annotations(folder):
  for path in folder.glob("sa_*.json"):
    content = json.loads(path.read_text())
    for ann in content["annotations"]:
      ann["area"] = 0
    path.write_text(json.dumps(content))


@pytest.mark.parametrize("case, args, pattern", [
    ("corrupt json", ["--num_shards=2", "--num_workers=2"], r"Corrupt JSON in '.*sa_2\.json'"),
    ("no annotation left", ["--num_shards=2"],
     r"No records written to .*: of 2 inputs, 2 without objects were dropped and 0 bad inputs skipped"),
    ("corrupt jpeg", ["--num_shards=2"], r"Cannot decode image '.*sa_2\.jpg'"),
    ("flags", ["--num_shards=0"], r"flag --num_shards=0: 0 is not a positive integer"),
    ("flags", ["stray"], r"unexpected arguments: stray"),
    ("flags", ["--tfds_data_dir=/nonexistent"], r"Give exactly one of --input_dir .* or --tfds_data_dir"),
])
def test_sa1b_cli_bad_input(tmp_path, sa1b_dir, case, args, pattern):
  if case == "corrupt json":
    (sa1b_dir / "sa_2.json").write_text('{"image": {"image_id": 2')
  elif case == "no annotation left":
    _no_annotations(sa1b_dir)
  elif case == "corrupt jpeg":
    (sa1b_dir / "sa_2.jpg").write_bytes((sa1b_dir / "sa_2.jpg").read_bytes()[:200])
  out = tmp_path / "out"
  assert_error(run_script("sa1b_to_arrayrecord.py", f"--input_dir={sa1b_dir}", f"--output_dir={out}", *args),
               pattern, out)


def test_sa1b_cli_bad_folders(tmp_path, sa1b_dir):
  out = tmp_path / "out"
  assert_error(run_script("sa1b_to_arrayrecord.py", f"--input_dir={sa1b_dir}"),
               "flag --output_dir=None: Flag --output_dir must have a value other than None")
  os.makedirs(tmp_path / "empty")
  assert_error(run_script("sa1b_to_arrayrecord.py", f"--input_dir={tmp_path / 'empty'}", f"--output_dir={out}"),
               r"No sa_\*\.jpg images in '.*empty'", out)
  assert_error(run_script("sa1b_to_arrayrecord.py", f"--input_dir={sa1b_dir / 'sa_1.jpg'}", f"--output_dir={out}"),
               r"SA-1B folder '.*sa_1\.jpg' does not exist or is not a directory", out)
  assert_error(run_script("sa1b_to_arrayrecord.py", f"--input_dir={sa1b_dir}", f"--output_dir={sa1b_dir}/sa_1.jpg/o"),
               r"Cannot create the output folder '.*sa_1\.jpg/o': Not a directory")


def test_sav_cli_bad_input(tmp_path):
  raw = tmp_path / "sav"
  synthetic.write_sav(str(raw), 2, SIZE, SIZE, 5)
  out = tmp_path / "out"
  (raw / "sav_000002.mp4").write_bytes((raw / "sav_000002.mp4").read_bytes()[:300])
  assert_error(run_script("sav_to_arrayrecord.py", f"--input_dir={raw}", f"--output_dir={out}", "--num_shards=2",
                          "--num_workers=2"), r"Cannot decode video '.*sav_000002\.mp4'", out)
  assert_error(run_script("sav_to_arrayrecord.py", f"--input_dir={raw}", f"--output_dir={out}", "--jpeg_quality=101"),
               r"flag --jpeg_quality=101: 101 is not an integer in the range \[1, 100\]", out)


def test_vos_cli_bad_input(tmp_path):
  root = tmp_path / "vos"
  synthetic.write_vos(str(root), 2, SIZE, SIZE, 2)
  out = tmp_path / "out"
  jpeg = root / "JPEGImages" / "synth_0001" / "00001.jpg"
  jpeg.write_bytes(jpeg.read_bytes()[:200])
  assert_error(run_script("vos_to_arrayrecord.py", f"--input_dir={root}", f"--output_dir={out}", "--num_shards=2"),
               r"Cannot decode image '.*synth_0001/00001\.jpg'", out)
  (root / "Annotations" / "synth_0001" / "00000.png").write_bytes(b"not a png")
  assert_error(run_script("vos_to_arrayrecord.py", f"--input_dir={root}", f"--output_dir={out}", "--num_shards=2",
                          "--num_workers=2"), r"synth_0001/00000\.png", out)
  (tmp_path / "list.txt").write_text("\n\n")
  assert_error(run_script("vos_to_arrayrecord.py", f"--input_dir={root}", f"--output_dir={out}",
                          f"--video_list={tmp_path / 'list.txt'}"), r"Video list '.*list\.txt' names no video", out)
  assert_error(run_script("vos_to_arrayrecord.py", f"--input_dir={tmp_path}", f"--output_dir={out}"),
               r"'.*' is not a VOS dataset folder: expected JPEGImages/ \+ Annotations/", out)


def test_synthetic_cli_bad_size(tmp_path):
  out = tmp_path / "synth"
  assert_error(run_script("synthetic.py", f"--output_dir={out}", "--size=20"),
               "Synthetic image size must be even and at least 32, got 20x20", out)
