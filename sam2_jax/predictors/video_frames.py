"""Video frames for the video predictor: a JPEG folder, a video file (PyAV) or an array; and MP4 writing.

Frames are kept on the host resized to the model's square input as uint8 (what the official
loader computes before normalising: PIL bicubic resize), so a long video costs
3 * image_size**2 bytes per frame on the host and nothing on the device until a frame is used.
"""

from collections.abc import Iterable, Iterator
import os
import threading
from typing import Sequence

import numpy as np
from PIL import Image

JPEG_EXTENSIONS = (".jpg", ".jpeg", ".JPG", ".JPEG")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".avi", ".mkv")


def resize_frame(frame: np.ndarray | Image.Image, image_size: int) -> np.ndarray:
  """RGB uint8 (image_size, image_size, 3), PIL bicubic as the official video loader."""
  image = frame if isinstance(frame, Image.Image) else Image.fromarray(frame)
  return np.asarray(image.convert("RGB").resize((image_size, image_size)), dtype=np.uint8)


def list_jpeg_frames(folder: str) -> list[str]:
  """JPEG files of a frame folder, sorted by their integer names (00000.jpg, 00001.jpg, ...)."""
  names = [n for n in os.listdir(folder) if n.endswith(JPEG_EXTENSIONS)]
  if not names:
    raise ValueError(f"No JPEG frames (*.jpg / *.jpeg) found in {folder!r}.")
  try:
    names.sort(key=lambda n: int(os.path.splitext(n)[0]))
  except ValueError as e:
    raise ValueError(f"Frame files in {folder!r} must be named by their index (e.g. 00000.jpg): {e}") from e
  return [os.path.join(folder, n) for n in names]


def _open_jpeg(path: str) -> Image.Image:
  try:
    image = Image.open(path)
    image.load()
  except Exception as e:  # PIL raises several types for truncated or non-image files.
    raise ValueError(f"Cannot read frame {path!r}: {e}") from e
  return image


def iter_video(path: str) -> Iterator[np.ndarray]:
  """The frames of a video file as RGB uint8 arrays, decoded one at a time (PyAV)."""
  import av  # pylint: disable=g-import-not-at-top
  try:
    with av.open(path) as container:
      for frame in container.decode(video=0):
        yield frame.to_ndarray(format="rgb24")
  except (av.error.FFmpegError, IndexError) as e:
    raise ValueError(f"Cannot decode video {path!r}: {e}") from e


def decode_video(path: str) -> list[np.ndarray]:
  """All frames of a video file as RGB uint8 arrays (PyAV)."""
  return list(iter_video(path))


class VideoFrames(Sequence[np.ndarray]):
  """The resized uint8 frames of a video; with `async_loading` all but frame 0 load in a thread."""

  def __init__(self, video_path, image_size: int, async_loading: bool = False):
    self.image_size = image_size
    self._error: Exception | None = None
    if isinstance(video_path, np.ndarray) or (isinstance(video_path, (list, tuple)) and video_path
                                               and isinstance(video_path[0], np.ndarray)):
      frames = np.asarray(video_path)
      if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"A video array must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}.")
      sources = list(frames)
    else:
      path = os.fspath(video_path)
      if os.path.isdir(path):
        sources = list_jpeg_frames(path)
      elif os.path.isfile(path) and path.endswith(VIDEO_EXTENSIONS):
        sources = decode_video(path)
        if not sources:
          raise ValueError(f"Video {path!r} has no frames.")
      elif os.path.exists(path):
        raise ValueError(f"Unsupported video {path!r}: expected a folder of JPEG frames, a video file "
                         f"({', '.join(VIDEO_EXTENSIONS)}) or a uint8 array (T, H, W, 3).")
      else:
        raise ValueError(f"Video path {path!r} does not exist.")
    self._sources = sources
    first = self._load_source(0)
    self.video_height, self.video_width = first.shape[:2]
    self._frames: list[np.ndarray | None] = [None] * len(sources)
    self._frames[0] = resize_frame(first, image_size)
    self._ready = [threading.Event() for _ in sources]
    self._ready[0].set()
    if async_loading:
      threading.Thread(target=self._load_rest, daemon=True).start()
    else:
      self._load_rest()
      if self._error is not None:
        raise self._error

  def _load_source(self, i: int) -> np.ndarray:
    src = self._sources[i]
    return np.asarray(_open_jpeg(src).convert("RGB")) if isinstance(src, str) else src

  def _load_rest(self) -> None:
    for i in range(1, len(self._sources)):
      try:
        frame = self._load_source(i)
        if frame.shape[:2] != (self.video_height, self.video_width):
          raise ValueError(f"Frame {i} has size {frame.shape[:2]}, frame 0 has "
                           f"{(self.video_height, self.video_width)}: all frames must have the same size.")
        self._frames[i] = resize_frame(frame, self.image_size)
      except ValueError as e:  # surfaced by __getitem__ (async) or __init__ (sync)
        self._error = e
        for event in self._ready[i:]:
          event.set()
        return
      self._ready[i].set()

  def __len__(self) -> int:
    return len(self._frames)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    self._ready[i].wait()
    if self._frames[i] is None:
      raise self._error
    return self._frames[i]


def write_mp4(path: str, frames: Iterable[np.ndarray], fps: int = 24) -> None:
  """Encodes RGB uint8 frames (H, W, 3) as an H.264 (or, without libx264, MPEG-4) yuv420p MP4, atomically.

  Frames of odd height or width lose their last row or column (yuv420p needs even sizes).
  """
  import av  # pylint: disable=g-import-not-at-top
  tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")
  try:
    with av.open(tmp, "w", format="mp4") as container:
      stream = None
      for frame in frames:
        if stream is None:
          if "libx264" in av.codecs_available:
            stream = container.add_stream("libx264", rate=fps, options={"crf": "12", "preset": "veryfast"})
          else:
            stream = container.add_stream("mpeg4", rate=fps, options={"qscale": "2"})
          stream.height, stream.width = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
          stream.pix_fmt = "yuv420p"
        image = np.ascontiguousarray(frame[:stream.height, :stream.width])
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
      if stream is None:
        raise ValueError(f"No frames to write to {path!r}.")
      container.mux(stream.encode())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
