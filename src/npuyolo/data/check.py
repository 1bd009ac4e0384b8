"""Validate a YOLO-format data set before training: one clear message per problem, naming file and line."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from npuyolo.errors import NpuyoloError
from npuyolo.yamlfile import YamlFileError, load_yaml, short

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
REQUIRED_KEYS = ("train", "val", "names")


class DataError(NpuyoloError, ValueError):
    """The data set cannot be trained on; `problems` lists every `file:line: message` found."""

    def __init__(self, problems: list[str], param: str | None = None):
        self.problems = problems
        if len(problems) == 1:  # the common case reads as one line
            super().__init__(problems[0], param=param)
            return
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} problems in the data set:\n{shown}{more}", param=param)

    def __reduce__(self):  # rebuilt from its problems (a plan's worker process hands it back pickled), not its message
        return type(self), (self.problems, self.param)


@dataclass
class SplitReport:
    images: int = 0
    instances: dict[str, int] = field(default_factory=dict)
    background_images: int = 0  # images with an empty label file
    duplicates: int = 0  # label rows repeating another row of the same file exactly (training drops them; not counted)


@dataclass
class DataReport:
    yaml_path: str
    root: str
    names: list[str]
    splits: dict[str, SplitReport]
    content_hash: str
    warnings: list[str] = field(default_factory=list)  # what is legal but likely a mistake (duplicate boxes)

    def as_dict(self) -> dict:
        return {
            "yaml": self.yaml_path, "root": self.root, "names": self.names, "nc": len(self.names),
            "content_hash": self.content_hash,
            "splits": {k: {"images": v.images, "background_images": v.background_images, "instances": v.instances,
                           "duplicates": v.duplicates} for k, v in self.splits.items()},
            "warnings": self.warnings,
        }


def load_data_yaml(path: str | Path) -> tuple[dict, Path, list[str]]:
    """Parse data.yaml and resolve its root the way Ultralytics does (`path:` key, else the yaml's folder)."""
    path = Path(path)
    if not path.is_file():
        raise DataError([f"{path}: data yaml not found"])
    try:
        cfg = load_yaml(path)  # bounded: an alias bomb is refused here, before Ultralytics ever reads the file
    except YamlFileError as e:
        raise DataError([str(e)]) from e
    if not isinstance(cfg, dict):
        raise DataError([f"{path}: expected a mapping with keys {', '.join(REQUIRED_KEYS)}"])
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise DataError([f"{path}: missing key(s) {', '.join(missing)} (need train, val, names; nc optional)"])
    names = parse_names(cfg["names"], path)
    nc = cfg.get("nc", len(names))
    if isinstance(nc, bool) or not isinstance(nc, int):
        raise DataError([f"{path}: nc must be a whole number, got {short(nc)} ({type(nc).__name__})"])
    if nc != len(names):
        raise DataError([f"{path}: nc is {nc} but names lists {len(names)} classes"])
    for split in ("train", "val", "test"):
        if split in cfg and not _is_split_spec(cfg[split], optional=split == "test"):
            raise DataError([f"{path}: {split} must be a folder, a .txt list or a list of them, got {short(cfg[split])}"])
    raw_root = cfg.get("path")
    if raw_root is not None and not isinstance(raw_root, str):
        raise DataError([f"{path}: path must be a folder name, got {short(raw_root)} ({type(raw_root).__name__})"])
    return cfg, dataset_root(raw_root, path), names


def dataset_root(raw_root: str | None, yaml_path: Path) -> Path:
    """The folder Ultralytics' check_det_dataset will read: `path:` as given (a relative one from the working
    directory, else under Ultralytics' datasets_dir), or the yaml's own folder when there is no `path:`.
    Checking any other folder than the one training reads would check the wrong files."""
    if not raw_root:
        return yaml_path.resolve().parent
    root = Path(raw_root)
    if not root.exists() and not root.is_absolute():
        from ultralytics.utils import DATASETS_DIR

        root = DATASETS_DIR / root
    return root.resolve()


def _is_split_spec(value, optional: bool) -> bool:
    if value is None or value == "":
        return optional
    if isinstance(value, str):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


def parse_names(names, path: Path) -> list[str]:
    """`names:` as a list or an {id: name} mapping with ids 0..n-1; a bare string is refused (it is not a list of classes)."""
    if isinstance(names, dict):
        keys = list(names)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            raise DataError([f"{path}: names keys must all be class ids 0..n-1 (integers), got {short(keys)}"])
        if sorted(keys) != list(range(len(keys))):
            raise DataError([f"{path}: names ids must be 0..{len(keys) - 1} without gaps, got {short(sorted(keys))}"])
        values = [names[k] for k in sorted(keys)]
    elif isinstance(names, list):
        values = names
    else:
        hint = " (write a list: names: [person])" if isinstance(names, str) else ""
        raise DataError([f"{path}: names must be a list or a mapping of class names, got {short(names)}{hint}"])
    if not values:
        raise DataError([f"{path}: names is empty; a detector needs at least one class"])
    bad = [v for v in values if not isinstance(v, (str, int, float)) or isinstance(v, bool) or str(v).strip() == ""]
    if bad:
        raise DataError([f"{path}: every class name must be a non-empty text, got {short(bad[0])}"])
    values = [str(v) for v in values]
    if len(set(values)) != len(values):
        counts = Counter(values)  # not values.count(v) per name: quadratic on a long list
        raise DataError([f"{path}: class names repeat: {short(sorted(v for v, n in counts.items() if n > 1))}"])
    return values


def split_paths(root: Path, spec: str | list[str], yaml_path: Path, split: str) -> list[Path]:
    """The folders or .txt lists of one split, resolved exactly as Ultralytics' check_det_dataset does.

    A single string falls back from '../x' to 'x' when the first does not exist; list entries never do. Any
    other rule would let this check pass where Ultralytics then finds the split missing (and, before npuyolo
    turned it off, ran the yaml's `download:` script).
    """
    try:
        if isinstance(spec, str):
            p = (root / spec).resolve()
            if not p.exists() and spec.startswith("../"):
                p = (root / spec[3:]).resolve()
            return [p]
        return [(root / entry).resolve() for entry in spec]
    except (OSError, RuntimeError) as e:  # a symlink loop, a name the OS refuses
        raise DataError([f"{yaml_path}: {split}: cannot resolve {spec!r} ({getattr(e, 'strerror', None) or e})"]) from None


def split_images(root: Path, spec: str | list[str], yaml_path: Path, split: str) -> list[Path]:
    images: list[Path] = []
    for p in split_paths(root, spec, yaml_path, split):
        if p.is_dir():
            images += scan_images(p, yaml_path, split)
        elif p.is_file() and p.suffix == ".txt":
            listed = [(p.parent / line.strip()).resolve() for line in p.read_text().splitlines() if line.strip()]
            _refuse_irregular([q for q in listed if q.exists() and not q.is_file()])
            images += listed
        elif p.exists() and not p.is_file():
            raise DataError([f"{yaml_path}: {split}: {p} is not a folder or a regular .txt file"])
        else:
            raise DataError([f"{yaml_path}: {split}: folder {p} does not exist"])
    return images


MAX_SCAN_FOLDERS = 10_000  # an images tree has a handful of folders; the whole file system has hundreds of thousands


def too_broad(folder: Path) -> str | None:
    """Why `folder` is no images folder to search (the file system root, the home folder or one above it), else None."""
    folder = folder.resolve()
    if folder == Path(folder.anchor):
        return "the file system root"
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry: there is no home folder to protect
        return None
    if folder == home or folder in home.parents:
        return "the home folder" if folder == home else "a folder above the home folder"
    return None


def scan_images(folder: Path, yaml_path: Path, split: str) -> list[Path]:
    """Image files under `folder`, sorted, found the way `Path.rglob` does (symlinked folders are not entered).

    Bounded: the file system root and the home folder are refused outright, and the walk stops with one line
    after MAX_SCAN_FOLDERS folders, so `path: /` with `train: .` cannot walk the whole disk (Ultralytics, which
    lists the images again itself, never gets to). Only regular files are images: a FIFO named x.jpg would
    block the first read of it forever (ours, then Ultralytics'), so it is refused here by name.
    """
    if (why := too_broad(folder)) is not None:
        raise DataError([f"{yaml_path}: {split}: refusing to search {folder} ({why}) for images; name the images folder"])
    images: list[Path] = []
    odd: list[Path] = []
    stack, visited = [folder], 0
    while stack:  # iterative: a very deep tree is no RecursionError
        current = stack.pop()
        visited += 1
        if visited > MAX_SCAN_FOLDERS:
            raise DataError([f"{yaml_path}: {split}: stopped searching {folder} for images after {MAX_SCAN_FOLDERS} "
                             "folders; name the images folder itself"])
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except OSError:  # an unreadable folder is skipped, as rglob skips it
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            elif os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
                (images if e.is_file() else odd).append(Path(e.path))
    _refuse_irregular(odd)
    return sorted(images)


def _refuse_irregular(paths: list[Path]) -> None:
    """Image or label names that are not regular files (FIFO, device, socket, dangling link): refused, never opened."""
    if paths:
        raise DataError([f"{q}: not a regular file (a FIFO, device, socket or broken link); only image files are read"
                         for q in sorted(paths)])


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last 'images' folder in the path becomes 'labels', suffix .txt."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def check_image(image: Path) -> str | None:
    try:
        with Image.open(image) as im:
            im.verify()
        with Image.open(image) as im:
            im.load()  # verify() does not decode pixel data; a truncated file fails here
            if min(im.size) < 10:
                return f"{image}: image is only {im.size[0]}x{im.size[1]} px"
    except Image.DecompressionBombError as e:
        return f"{image}: refused: {e}"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f"{image}: unreadable or corrupt image ({e})"
    return None


def check_labels(label: Path, nc: int) -> tuple[list[str], list[int]]:
    """Problems of a label file, and the class of each box in it (an exact repeat of a row counted once, as training
    keeps it; `duplicate_rows` counts the repeats)."""
    problems, classes = [], []
    seen: set[tuple] = set()
    for n, line in enumerate(label.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            problems.append(f"{label}:{n}: expected 5 fields 'class cx cy w h', found {len(fields)}")
            continue
        try:
            cls, *coords = int(fields[0]), *map(float, fields[1:])
        except ValueError:
            problems.append(f"{label}:{n}: class must be an integer and coordinates numbers: {line.strip()!r}")
            continue
        if not 0 <= cls < nc:
            problems.append(f"{label}:{n}: class id {cls} out of range (nc = {nc}, valid 0..{nc - 1})")
        bad = [v for v in coords if not 0.0 <= v <= 1.0]
        if bad:
            problems.append(f"{label}:{n}: coordinates must be normalised to [0, 1], found {bad[0]:g}")
        elif coords[2] <= 0 or coords[3] <= 0:
            problems.append(f"{label}:{n}: box width and height must be > 0")
        if (cls, *coords) not in seen:
            seen.add((cls, *coords))
            classes.append(cls)
    return problems, classes


def duplicate_rows(label: Path) -> int:
    """Rows of a label file that repeat an earlier row exactly (same class and numbers): Ultralytics drops them."""
    rows = []
    for line in label.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split()
        try:
            rows.append((int(fields[0]), *map(float, fields[1:])) if len(fields) == 5 else None)
        except ValueError:
            continue
    rows = [r for r in rows if r is not None]
    return len(rows) - len(set(rows))


def fingerprint(path: Path, cfg: dict, root: Path) -> str:
    """Cheap identity of a data set: yaml bytes, every image's path, size and mtime, every label's bytes."""
    h = hashlib.sha256(path.read_bytes())
    for split in ("train", "val", "test"):
        if cfg.get(split):
            for image in split_images(root, cfg[split], path, split):
                st = image.stat()
                h.update(f"{image}:{st.st_size}:{st.st_mtime_ns}".encode())
                label = label_path(image)
                h.update(label.read_bytes() if label.is_file() else b"<missing>")
    return h.hexdigest()[:24]


def check_dataset(path: str | Path, progress: Callable[[int], None] | None = None, cache_dir: Path | None = None) -> DataReport:
    """Read every image header and label line; raise DataError listing all problems, else report counts.

    With `cache_dir`, a report for an unchanged data set (same fingerprint) is reused instead of decoding
    every image again; only clean reports are cached.
    """
    path = Path(path)
    cfg, root, names = load_data_yaml(path)
    cached = None
    if cache_dir is not None:
        try:
            cached = Path(cache_dir) / f"datacheck-{fingerprint(path, cfg, root)}.json"
        except (DataError, OSError):
            cached = None
        if cached is not None and cached.is_file():
            d = json.loads(cached.read_text())
            return DataReport(d["yaml"], d["root"], d["names"], {k: SplitReport(v["images"], v["instances"], v["background_images"],
                                                                              v.get("duplicates", 0))
                                                                  for k, v in d["splits"].items()}, d["content_hash"],
                              d.get("warnings", []))
    report = _check(path, cfg, root, names, progress)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        from npuyolo.paths import write_text

        write_text(cached, json.dumps(report.as_dict()))
    return report


def _check(path: Path, cfg: dict, root: Path, names: list[str], progress: Callable[[int], None] | None) -> DataReport:
    problems: list[str] = []
    warnings: list[str] = []
    splits: dict[str, SplitReport] = {}
    digest = hashlib.sha256(path.read_bytes())
    for split in ("train", "val", "test"):
        if not cfg.get(split):
            continue
        images = split_images(root, cfg[split], path, split)
        if not images:
            problems.append(f"{path}: {split}: no images found under {cfg[split]}")
        report = SplitReport(instances={n: 0 for n in names})
        for image in images:
            report.images += 1
            if (msg := check_image(image)) is not None:
                problems.append(msg)
            label = label_path(image)
            if label.exists() and not label.is_file():  # a FIFO would block the read: never opened
                problems.append(f"{label}: not a regular file (a FIFO, device or socket); only label files are read")
            elif not label.is_file():
                problems.append(f"{image}: label file missing, expected {label} (write an empty file for an image with no objects)")
            else:
                label_problems, classes = check_labels(label, len(names))
                problems += label_problems
                repeats = duplicate_rows(label) if not label_problems else 0
                if repeats:
                    report.duplicates += repeats
                    warnings.append(f"{label}: {repeats} duplicate box row(s), each a repeat of another row; training keeps "
                                    "one of each (counted once here)")
                report.background_images += not classes and not label_problems
                for c in classes:
                    if 0 <= c < len(names):
                        report.instances[names[c]] += 1
                digest.update(image.name.encode() + label.read_bytes())
            digest.update(str(image.stat().st_size).encode())
            if progress:
                progress(1)
        splits[split] = report
    if problems:
        raise DataError(problems)
    if len(warnings) > 20:
        warnings = warnings[:20] + [f"... and {len(warnings) - 20} more label files with duplicate boxes"]
    return DataReport(str(path), str(root), names, splits, digest.hexdigest()[:16], warnings)
