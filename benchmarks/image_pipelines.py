"""examples/s of nntrain's `images:` and `tfrecord:` pipelines against keras.utils.image_dataset_from_directory.

The MNIST test set (IDX) is written as PNG files into DIR/train/<class>/ (the first 8,000) and DIR/test/<class>/,
then converted with `nntrain convert` into 4 TFRecord shards per split (PNG bytes). Each pipeline reads the 8,000
train images once per pass: decode, resize to the image size, batch of 128, scale to [0, 1], prefetch; no cache.
Both folder pipelines read the files in a shuffled order (Keras's default shuffle=True, and nntrain's fixed-seed
shuffle of the file list): reading in directory order is ~7% cheaper on its own, which is not what is compared.
After one warm-up pass each (so all read from a warm page cache), ROUNDS rounds alternate between the pipelines,
each round starting with the next one. The median pass is reported as examples per second of wall-clock time and
per second of this process's CPU time (all threads): on a machine shared with other work the wall-clock figure
swings with the load, while the CPU-time figure is what a pipeline costs.

With --cold, the kernel's page cache is dropped before every timed pass (Linux, as root: writes 1 to
/proc/sys/vm/drop_caches), so each pass reads its files from the disk: the case of a first epoch, or of a dataset
larger than memory. The files are written under --workdir, which must be on a disk, not a tmpfs.

  python benchmarks/image_pipelines.py [--mnist_dir=../shared/data/mnist] [--image_size=28,32] [--cold]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf
from PIL import Image

from nntrain.config import base_config
from nntrain.data import convert, idx, images, tfrecord

BATCH = 128
ROUNDS = 6
TRAIN = 8000
KERAS, FOLDER = "keras image_dataset_from_directory", "nntrain images:DIR"


def write_pngs(mnist_dir: str, root: Path) -> None:
    pixels, labels = idx.load(mnist_dir)["test"]
    for split, part in (("train", slice(0, TRAIN)), ("test", slice(TRAIN, None))):
        for i, (image, label) in enumerate(zip(pixels[part], labels[part])):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:05d}.png")


def pipelines(root: Path, records: Path, size: int) -> dict[str, tf.data.Dataset]:
    data_config = base_config().data
    data_config.image_size, data_config.channels = (size, size), 1

    def batched(dataset: tf.data.Dataset) -> tf.data.Dataset:
        scale = lambda x, y: (tf.cast(x, tf.float32) / 255.0, y)  # noqa: E731
        return dataset.batch(BATCH).map(scale, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    folder = images.ImageFolderSource(str(root), data_config).select("train").dataset
    data_config.record_format = "image"
    shards = tfrecord.TFRecordSource(str(records), data_config).select("train").dataset
    anchor = keras.utils.image_dataset_from_directory(
        root / "train", image_size=(size, size), color_mode="grayscale", batch_size=BATCH, seed=0,
        verbose=False).map(lambda x, y: (x / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)
    return {KERAS: anchor.prefetch(tf.data.AUTOTUNE), FOLDER: batched(folder),
            "nntrain tfrecord:DIR (4 shards)": batched(shards)}


DROP_CACHES = "/proc/sys/vm/drop_caches"


def drop_page_cache() -> None:
    """Writes dirty pages out and empties the kernel's page cache (Linux, root)."""
    os.sync()
    with open(DROP_CACHES, "w") as control:
        control.write("1")


def one_pass(dataset: tf.data.Dataset, cold: bool) -> tuple[float, float]:
    """(examples per wall-clock second, examples per CPU second) of one pass."""
    if cold:
        drop_page_cache()
    wall, cpu = time.perf_counter(), time.process_time()
    examples = sum(int(y.shape[0]) for _, y in dataset)
    assert examples == TRAIN, examples
    return examples / (time.perf_counter() - wall), examples / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist_dir", default=os.environ.get(
        "NNTRAIN_MNIST_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")))
    parser.add_argument("--image_size", default="28,32", help="sizes to resize to, comma-separated (28: as stored)")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before every timed pass (root)")
    parser.add_argument("--workdir", default=None, help="where the files are written (default: the temp dir)")
    args = parser.parse_args()
    if args.cold and not os.access(DROP_CACHES, os.W_OK):
        parser.exit(2, f"--cold needs to write {DROP_CACHES} (Linux, as root); run without --cold\n")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root, records = Path(tmp) / "png", Path(tmp) / "records"
        write_pngs(args.mnist_dir, root)
        data_config = base_config().data
        data_config.source = f"images:{root}"
        convert.convert(data_config, ["train"], str(records), shards=4)
        print(f"tf {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} cores; {TRAIN} PNGs of 28x28, "
              f"batch {BATCH}, median of {ROUNDS} passes, {'cold' if args.cold else 'warm'} page cache; "
              f"load average {os.getloadavg()[0]:.1f} at the start")
        for size in (int(s) for s in args.image_size.split(",")):
            datasets = pipelines(root, records, size)
            passes: dict[str, list[tuple[float, float]]] = {name: [] for name in datasets}
            for dataset in datasets.values():
                one_pass(dataset, cold=False)  # warm-up: traces the functions and fills the page cache
            names = list(datasets)
            for round_index in range(ROUNDS):
                for name in names[round_index % len(names):] + names[:round_index % len(names)]:
                    passes[name].append(one_pass(datasets[name], args.cold))
            wall = {name: statistics.median(w for w, _ in values) for name, values in passes.items()}
            cpu = {name: statistics.median(c for _, c in values) for name, values in passes.items()}
            print(f"\nresized to {size}x{size}:{'examples/s':>34} {'x keras':>8} {'x images':>9}"
                  f" {'examples/CPU-s':>15} {'x keras':>8} {'x images':>9}")
            for name in datasets:
                print(f"  {name:<36} {wall[name]:>9,.0f} {wall[name] / wall[KERAS]:>8.2f} "
                      f"{wall[name] / wall[FOLDER]:>9.2f} {cpu[name]:>15,.0f} {cpu[name] / cpu[KERAS]:>8.2f} "
                      f"{cpu[name] / cpu[FOLDER]:>9.2f}")
        print(f"\nload average {', '.join(f'{v:.1f}' for v in os.getloadavg())} at the end (other processes share "
              "the cores)")

if __name__ == "__main__":
    main()
