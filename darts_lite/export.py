"""``task=export``: a trained network as files that plain torch (or an ONNX runtime) runs on raw images.

    python -m darts_lite task=export ckpt_path=runs/train/<run>/checkpoints/last.ckpt
    python -m darts_lite task=export ckpt_path=runs/ofa/<run>/specialise/<budget>/subnet.pt

What ``ckpt_path`` may name: the checkpoint of a ``task=train`` run (its evaluation network), or the ``subnet.pt``
of a Once-for-All specialisation (a standalone sub-network). The run folder holds:

    model.pt2     a torch.export program: raw images [N, C, H, W] as darts_lite reads them (any N) -> logits
                  [N, classes]. The normalisation the network was trained with is inside it (and, for a Once-for-All
                  sub-network, the resize to the side it was chosen at); no auxiliary head, no dropout, no drop path
    model.onnx    the same program in ONNX, when the optional ONNX packages are installed (pip install
                  "darts_lite[onnx]"); checked against model.pt2 with onnxruntime
    model.json    what goes in and what comes out: classes, input shape, dtype and value range, mean and std, the
                  run's accuracy, the versions that wrote it and how to load it
    summary.json, config.yaml

The input's normalisation comes from the checkpoint: the data module's record (``ImageDataModule.state_dict``)
that checkpoints keep, or ``subnet.pt``'s ``data``. Files written before that record existed have their data
read again (the training images' mean and std are computed as the run computed them).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from ._version import __version__
from .errors import ConfigError
from .ofa.shrinking import resize
from .run.checkpoints import RECORD_FORMAT, RECORD_KEY, record_problem
from .run.folder import start_run
from .torchfiles import is_state_dict, weights_fit, write_text_atomically

__all__ = ["RawImageClassifier", "check", "export_program", "onnx_missing", "read_exportable", "run_export", "write_onnx"]

PROGRAM, ONNX, CARD = "model.pt2", "model.onnx", "model.json"

# the raw images of darts_lite's own datasets as the data module holds them: (dtype, value range)
RAW_IMAGES = {
    "cifar10": ("uint8", "0..255: the release's pixels, RGB planes"),
    "cifar100": ("uint8", "0..255: the release's pixels, RGB planes"),
    "digits": ("float32", "0..16: scikit-learn's 8x8 digits as load_digits gives them"),
    "synthetic": ("float32", "unbounded: darts_lite's generated class patterns plus Gaussian noise"),
    "folder": ("uint8", "0..255: the image files' pixels (grayscale, or RGB planes) at the run's resolution, as "
                        "Pillow decodes them, resized (bilinear) to that side"),
}
USER_IMAGES = "as the Dataset's items give them (uint8 images passed as images.float() give the same logits)"
# what a data module's record must hold for the program to be built in front of its network
INPUT_KEYS = {"mean", "std", "image_size", "in_channels"}

ONNX_HINT = 'pip install "darts_lite[onnx]" (onnx, onnxscript, onnxruntime) and export again to add model.onnx'
TOLERANCE = 1e-4  # largest |difference| in logits between a written file and the network it came from


class RawImageClassifier(nn.Module):
    """A classifier in eval mode behind its input normalisation: raw images [N, C, H, W] (uint8 or float, as darts_lite
    reads them) -> logits [N, classes]. ``side``: the input side the network runs at, when it differs from the
    images' (a Once-for-All sub-network chosen at a lower resolution); the normalised images are resized to it as
    the specialisation measured them."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float], side: int | None = None):
        super().__init__()
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.side = side

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        return self.net(resize(x, self.side))


# ---- what ckpt_path holds ------------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _is_side(value: Any) -> bool:
    """Whether ``value`` is an input side as subnet.pt records it (an integer >= 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _run_folder(path: Path) -> Path:
    """The run folder of a checkpoint file: the folder above ``checkpoints/``, else the file's own."""
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def _group(settings: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The node under ``prefix`` of a run's flattened settings, nested again ({"data.train._target_": ...} ->
    {"train": {"_target_": ...}})."""
    node: dict[str, Any] = {}
    for key, value in settings.items():
        if key.startswith(prefix + "."):
            *parents, leaf = key[len(prefix) + 1:].split(".")
            inner = node
            for part in parents:
                inner = inner.setdefault(part, {})
            inner[leaf] = value
    return node


def _data_again(data: dict[str, Any], seed: int, how: str) -> dict[str, Any]:
    """The data module's record (classes, normalisation) of a data group, computed by reading its images again as the
    run read them. Nothing is downloaded: the data must be where the run had it."""
    from .schema import build

    node = dict(data, download=False) if "download" in data else dict(data)
    try:
        dm = build(node, "data", seed=seed, bilevel=False)
        dm.setup()
    except Exception as e:  # a missing dataset, a user's Dataset that no longer imports, a setting no longer taken
        where = f" (data.root={data.get('root')!r}, relative to the folder the run started in)" if "root" in data else ""
        raise ConfigError(f"{how}: the file keeps no record of the input normalisation (written before darts_lite kept "
                          f"one), and reading its data again to compute it failed: {_first_line(e)}; run the export "
                          f"where the data of the run is{where}") from None
    state = dict(dm.state_dict())
    if not INPUT_KEYS <= set(state):
        raise ConfigError(f"{how}: the file keeps no record of the input normalisation, and its data module "
                          f"({type(dm).__name__}) keeps none either (its state_dict has no {', '.join(sorted(INPUT_KEYS))})")
    images = getattr(dm, "train_x", None)  # the training images as the module holds them, when it holds them
    if isinstance(images, torch.Tensor):
        state.setdefault("dtype", str(images.dtype).removeprefix("torch."))
    return state


class TrainedNetwork:
    """The evaluation network of a ``task=train`` checkpoint."""

    kind = "train"

    def __init__(self, path: Path, saved: dict[str, Any], how: str):
        self.path, self.saved, self.how = path, saved, how
        self.record = saved[RECORD_KEY]
        hp = saved.get("hyper_parameters") or {}
        if not isinstance(hp, dict) or not isinstance(hp.get("genotype"), str) \
                or not isinstance(hp.get("network") or {}, dict):
            raise ConfigError(f"{how}: the checkpoint's hyper-parameters hold no genotype and network arguments, so "
                              "the evaluation network cannot be rebuilt (was it written by a LightningModule of your own?)")
        self.genotype, self.network_args = hp["genotype"], dict(hp.get("network") or {})
        weights_fit(self._builder(), self._weights(), how)  # on the meta device: no memory taken

    def _builder(self) -> Callable[[], nn.Module]:
        """A builder of the evaluation network the hyper-parameters describe; ConfigError for a genotype that does
        not parse."""
        from .spaces import parse_genotype

        try:
            space, genotype = parse_genotype(self.genotype)
        except ValueError as e:
            raise ConfigError(f"{self.how}: the checkpoint's genotype does not parse ({_first_line(e)})") from None
        return lambda: space.EvalNetwork(genotype, **self.network_args)

    def _weights(self) -> dict[str, torch.Tensor]:
        """The evaluation network's weights in the checkpoint (the module's, without its ``net.`` prefix)."""
        return {k.removeprefix("net."): v for k, v in self.saved["state_dict"].items() if k.startswith("net.")}

    def describe(self) -> str:
        return f"the evaluation network of the task=train run in {_run_folder(self.path.resolve())}"

    def network(self) -> tuple[nn.Module, int | None]:
        net = self._builder()()
        net.load_state_dict(self._weights())
        if getattr(net, "aux_head", None) is not None:
            net.aux_head = None  # eval mode never runs it: the program holds only what runs
        return net.eval(), None

    def description(self) -> dict[str, Any]:
        return {"network": "evaluation network of a genotype (task=train)", "genotype": self.genotype,
                "network_arguments": self.network_args}

    def data(self) -> dict[str, Any]:
        settings = self.record["settings"]
        target = str(settings.get("data._target_") or "ImageDataModule")
        # Lightning keeps a data module's state_dict under its class name
        for key in dict.fromkeys((target.rsplit(".", 1)[-1], "ImageDataModule")):
            state = self.saved.get(key)
            if isinstance(state, dict) and INPUT_KEYS <= set(state):
                return dict(state)
        print(f"Normalisation: not in the checkpoint (written before darts_lite kept it); reading the run's data again "
              f"(data.name={settings.get('data.name')}, seed={settings.get('seed')})", flush=True)
        return _data_again(_group(settings, "data"), int(settings.get("seed") or 0), self.how)

    def accuracy(self) -> dict[str, Any] | None:
        """val/acc of the epoch the checkpoint holds (task=train validates on the test split), from the run's
        metrics.csv, else its summary.json; None when neither is beside the checkpoint."""
        folder, epoch = _run_folder(self.path), self.saved.get("epoch")
        metrics = folder / "metrics.csv"
        if metrics.is_file():
            with metrics.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("val/acc") and str(r.get("epoch")) == str(epoch)]
            if rows:
                return {"value": float(rows[-1]["val/acc"]), "metric": "val/acc", "split": "test", "epoch": epoch,
                        "source": str(metrics)}
        summary = folder / "summary.json"
        if summary.is_file():
            value = (json.loads(summary.read_text()).get("metrics") or {}).get("val/acc")
            if value is not None:
                return {"value": float(value), "metric": "val/acc", "split": "test", "epoch": None,
                        "source": str(summary)}
        return None


class OFASubnetFile:
    """A standalone sub-network the Once-for-All specialisation wrote (``<run>/specialise/<budget>/subnet.pt``)."""

    kind = "ofa"

    def __init__(self, path: Path, saved: dict[str, Any], how: str):
        self.path, self.saved, self.how = path, saved, how

    def describe(self) -> str:
        return f"the Once-for-All sub-network in {self.path.resolve().parent}"

    def network(self) -> tuple[nn.Module, int | None]:
        from .ofa.specialise import load_subnet

        try:
            subnet, _ = load_subnet(self.path)
        except Exception as e:
            raise ConfigError(f"{self.how}: the sub-network cannot be rebuilt from the file: {_first_line(e)}") from None
        return subnet, int(self.saved["resolution"])

    def description(self) -> dict[str, Any]:
        return {"network": "Once-for-All sub-network (task=ofa specialisation)", "genotype": None,
                "setting": self.saved["setting"], "resolution": int(self.saved["resolution"]),
                "network_arguments": self.saved["config"]}

    def data(self) -> dict[str, Any]:
        state = self.saved.get("data")
        if isinstance(state, dict) and INPUT_KEYS <= set(state):
            return dict(state)
        # written before subnet.pt kept it: the Once-for-All run folder's config.yaml says how its data was read
        config = self.path.parents[2] / "config.yaml" if len(self.path.parents) > 2 else None
        if config is None or not config.is_file():
            raise ConfigError(f"{self.how}: the file keeps no record of the input normalisation (written before "
                              "darts_lite kept one), and no config.yaml of its Once-for-All run is two folders up "
                              "(<run>/specialise/<budget>/subnet.pt) to read the data again from; export it where the "
                              "specialisation wrote it")
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(config)
        data = OmegaConf.to_container(cfg.get("data") or {}, resolve=True)
        print(f"Normalisation: not in subnet.pt (written before darts_lite kept it); reading the run's data again "
              f"({config}: data.name={data.get('name')}, seed={cfg.get('seed', 0)})", flush=True)
        return _data_again(data, int(cfg.get("seed", 0)), self.how)

    def accuracy(self) -> dict[str, Any] | None:
        """The measured test accuracy subnet.json beside the file records (None when it is not there)."""
        record = self.path.parent / "subnet.json"
        if not record.is_file():
            return None
        value = json.loads(record.read_text()).get("accuracy")
        return None if value is None else {
            "value": float(value), "metric": "accuracy", "split": "test", "epoch": None, "source": str(record),
            "note": "measured after BatchNorm calibration on training batches, as the specialisation measured it"}


def read_exportable(ckpt_path: Any) -> TrainedNetwork | OFASubnetFile:
    """What ``ckpt_path`` names, read (weights only) and checked; ConfigError, one line, for anything task=export
    cannot export."""
    how = f"ckpt_path={ckpt_path}"
    wanted = ("task=export takes a retrained network (a task=train run's checkpoints/last.ckpt) or a Once-for-All "
              "sub-network (<ofa run>/specialise/<budget>/subnet.pt)")
    if ckpt_path is None or str(ckpt_path).strip() in ("", "None", "null"):
        raise ConfigError(f"ckpt_path=null: {wanted}, e.g. ckpt_path=runs/train/<run>/checkpoints/last.ckpt")
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        raise ConfigError(f"{how}: no such file; {wanted}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch's own messages here name its internals (or suggest unpickling code), not the file
        raise ConfigError(f"{how}: not a readable checkpoint (not a torch file, a truncated one, or one holding objects "
                          f"other than tensors and plain values); {wanted}") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{how}: not a checkpoint (the file holds a {type(saved).__name__}); {wanted}")
    if RECORD_KEY not in saved and {"config", "setting", "resolution", "state_dict"} <= set(saved):
        wrong = [key for key, ok in (("config", isinstance(saved["config"], dict)),
                                     ("setting", isinstance(saved["setting"], dict)),
                                     ("resolution", _is_side(saved["resolution"])),
                                     ("state_dict", is_state_dict(saved["state_dict"])),
                                     ("data", isinstance(saved.get("data", {}), dict))) if not ok]
        if wrong:
            raise ConfigError(f"{how}: a damaged sub-network file (its {', '.join(wrong)} not of the types the "
                              "specialisation writes); export the subnet.pt of a Once-for-All run again")
        from .ofa.specialise import subnet_builder

        weights_fit(subnet_builder(saved, how), saved["state_dict"], how)  # on the meta device: no memory taken
        return OFASubnetFile(path, saved, how)
    if RECORD_KEY not in saved and {"config", "state_dict", "phase"} <= set(saved):
        raise ConfigError(f"{how}: the elastic Once-for-All network (network.pt), which holds every sub-network; "
                          "export a sub-network the specialisation took out of it: give task=ofa a budget "
                          "(ofa.constraint.flops=... with ofa.phase=specialise) and export its specialise/<budget>/subnet.pt")
    record = saved.get(RECORD_KEY)
    if "state_dict" not in saved or not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise ConfigError(f"{how}: not a checkpoint darts_lite wrote (no run record), so nothing says which network and "
                          f"input it holds; {wanted}")
    if record.get("format") != RECORD_FORMAT:
        raise ConfigError(f"{how}: written by darts_lite {record.get('version')} (checkpoint format "
                          f"{record.get('format')}); this darts_lite reads format {RECORD_FORMAT}: export it with the "
                          "version that wrote it")
    problem = record_problem(record)
    if problem or not is_state_dict(saved["state_dict"]):
        raise ConfigError(f"{how}: a damaged checkpoint ({problem or 'its state_dict is not of tensors'}); {wanted}")
    task = record.get("task")
    if task == "search":
        raise ConfigError(f"{how}: the checkpoint of a search, whose supernet mixes every candidate op and is not a "
                          "network to deploy; retrain the cell it found (python -m darts_lite +experiment=train "
                          f"genotype={_run_folder(path)}) and export that run's checkpoints/last.ckpt")
    if task == "ofa":
        raise ConfigError(f"{how}: a phase checkpoint of a Once-for-All run (the elastic network while it trains); "
                          "export a sub-network the specialisation took out of it: "
                          "<ofa run>/specialise/<budget>/subnet.pt (task=ofa with ofa.constraint.flops=...)")
    if task != "train":
        raise ConfigError(f"{how}: a checkpoint of a task={task} run; {wanted}")
    return TrainedNetwork(path, saved, how)


def check(cfg: DictConfig) -> TrainedNetwork | OFASubnetFile:
    """The config check of task=export: ckpt_path names a file it can export (read, not changed). Returns it."""
    return read_exportable(cfg.get("ckpt_path"))


# ---- writing ---------------------------------------------------------------------------------------------------
def example_images(data: dict[str, Any], dtype: torch.dtype, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A batch of images like the raw ones (uint8 pixels, or floats around the data's mean): the program is traced
    with them and each written file checked on them. Two, as torch.export takes a batch of one for a fixed size."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, int(data["in_channels"]), int(data["image_size"]), int(data["image_size"]))
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    mean = torch.tensor(data["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(data["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return (mean + std * torch.randn(shape, generator=g)).to(dtype)


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``model`` traced by torch.export on ``example``, its batch dimension dynamic (any batch size runs)."""
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes={"images": {0: batch}})


def onnx_missing() -> str | None:
    """Why model.onnx cannot be written here (the packages torch's ONNX exporter needs are missing), else None."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    return f"{' and '.join(missing)} not installed" if missing else None


@contextmanager
def _quiet_onnx_exporter() -> Iterator[None]:
    """The exporter and its optimiser log a line per pass and a warning per optional package they do without
    (torchvision's ops), and torch warns of its own deprecations on the way: nothing a user acts on."""
    loggers = {name: logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")}
    levels = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])


def write_onnx(program: torch.export.ExportedProgram, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """``program`` as one ONNX file at ``path`` (input ``images``, output ``logits``, the batch dimension dynamic),
    checked with onnxruntime when it is installed. {"written": bool, ...}: why not, or the opset and the check."""
    missing = onnx_missing()
    if missing:
        return {"written": False, "why": f"{missing}; {ONNX_HINT}"}
    try:
        with _quiet_onnx_exporter():
            onnx_program = torch.onnx.export(program, (example,), dynamo=True, input_names=["images"],
                                             output_names=["logits"], external_data=False, verbose=False)
            onnx_program.save(str(path), external_data=False)
    except Exception as e:  # an op the ONNX exporter cannot translate: model.pt2 stands without it
        path.unlink(missing_ok=True)
        return {"written": False, "why": f"the ONNX exporter failed: {type(e).__name__}: {_first_line(e)}"}
    import onnx

    opset = next((o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain in ("", "ai.onnx")),
                 None)
    result: dict[str, Any] = {"written": True, "file": path.name, "opset": opset, "input": "images", "output": "logits"}
    if importlib.util.find_spec("onnxruntime") is None:
        result["checked"] = "not checked: onnxruntime is not installed"
        return result
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = program.module()(example)
    worst = 0.0
    for batch in (example[:1], example):  # one image, and the traced batch: the batch dimension is free
        got = torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])
        worst = max(worst, float((got - expected[: len(batch)]).abs().max()))
    result["max_abs_difference"] = worst
    result["checked"] = "onnxruntime, against model.pt2"
    if worst > TOLERANCE:
        raise RuntimeError(f"model.onnx's logits differ from model.pt2's by {worst:.3g} under onnxruntime")
    return result


def _how_to_load(data: dict[str, Any], dtype: str, onnx: dict[str, Any]) -> list[str]:
    shape = f"[N, {data['in_channels']}, {data['image_size']}, {data['image_size']}]"
    lines = ["import torch",
             f"model = torch.export.load('{PROGRAM}').module()  # plain torch: darts_lite is not needed",
             f"images = ...  # raw images, torch.{dtype} {shape}, any N, not normalised (model.json: input)",
             "with torch.no_grad():",
             "    logits = model(images)  # [N, classes]; classes[i] names logits[:, i]",
             "predicted = logits.argmax(dim=1)"]
    if onnx.get("written"):
        lines += ["# or with onnxruntime:",
                  f"import onnxruntime; session = onnxruntime.InferenceSession('{ONNX}')",
                  "logits = session.run(None, {'images': images.numpy()})[0]"]
    return lines


def run_export(cfg: DictConfig) -> dict[str, Any]:
    """Export the network ``cfg.ckpt_path`` holds into the run folder (see the module docstring); returns the summary."""
    started = time.time()
    source = check(cfg)
    print(f"Export: {source.describe()} ({source.path.name})", flush=True)
    data = source.data()
    net, side = source.network()
    out_dir = start_run(cfg)  # after every refusal: a file that cannot be exported leaves no run folder behind
    name = str(data.get("name"))
    dtype_name = str(data.get("dtype") or RAW_IMAGES.get(name, ("float32",))[0])
    dtype = getattr(torch, dtype_name)
    model = RawImageClassifier(net, data["mean"], data["std"], side if side != data["image_size"] else None).eval()
    example = example_images(data, dtype)
    with torch.no_grad():
        expected = model(example)
    classes = [str(c) for c in data.get("classes") or range(expected.shape[1])]
    if expected.shape[1] != len(classes):
        raise ConfigError(f"ckpt_path={source.path}: the network gives {expected.shape[1]} logits and its data has "
                          f"{len(classes)} classes; the record of its data does not belong to it")
    program = export_program(model, example)
    with torch.no_grad():
        difference = float((program.module()(example) - expected).abs().max())
    if difference > TOLERANCE:
        raise RuntimeError(f"the exported program's logits differ from the network's by {difference:.3g}")
    torch.export.save(program, out_dir / PROGRAM)
    print(f"{PROGRAM}: torch.export program, raw images {dtype_name} [N, {data['in_channels']}, {data['image_size']}, "
          f"{data['image_size']}] (any N) -> logits [N, {len(classes)}]; checked against the network: max |difference| "
          f"{difference:.2g}", flush=True)
    onnx = write_onnx(program, example, out_dir / ONNX)
    if onnx["written"]:
        print(f"{ONNX}: opset {onnx['opset']}; " + (f"checked with onnxruntime: max |difference| "
                                                    f"{onnx['max_abs_difference']:.2g}" if "max_abs_difference" in onnx
                                                    else onnx["checked"]), flush=True)
    else:
        print(f"{ONNX}: not written ({onnx.get('why')})", flush=True)
    accuracy = source.accuracy()
    card = {
        "format": "darts_lite-export-1",
        "source": {"kind": source.kind, "path": str(source.path.resolve())},
        **source.description(),
        "classes": classes,
        "input": {"name": "images", "shape": [int(data["in_channels"]), int(data["image_size"]), int(data["image_size"])],
                  "batch": "any size (the first dimension is dynamic)", "dtype": dtype_name,
                  "values": RAW_IMAGES.get(name, (dtype_name, USER_IMAGES))[1], "dataset": name,
                  "note": "raw images as darts_lite's data module reads them (after data.resolution's resize when "
                          "set), not normalised: the program normalises them"},
        "normalisation": {"mean": list(data["mean"]), "std": list(data["std"]),
                          "applied": "(images.float() - mean) / std per channel, inside the program"},
        "output": {"name": "logits", "shape": ["N", len(classes)], "note": "unnormalised scores; softmax gives "
                   "probabilities, argmax the class (classes[i] names column i)"},
        "accuracy": accuracy,
        "files": {"program": PROGRAM, "onnx": ONNX if onnx["written"] else None},
        "onnx": onnx,
        "versions": {"darts_lite": __version__, "torch": torch.__version__},
        "how_to_load": _how_to_load(data, dtype_name, onnx),
    }
    summary = {"task": "export", "status": "done", "ckpt_path": str(source.path), "kind": source.kind,
               "files": [f for f in (PROGRAM, ONNX if onnx["written"] else None, CARD) if f],
               "max_abs_difference": difference, "onnx": onnx,
               "accuracy": None if accuracy is None else accuracy["value"], "run_dir": str(out_dir),
               "wall_time_s": time.time() - started}
    write_text_atomically(out_dir / CARD, json.dumps(card, indent=2) + "\n")
    write_text_atomically(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    shown = "not found beside the checkpoint" if accuracy is None else (
        f"{accuracy['value']:.4f} ({accuracy['split']} split, from {Path(accuracy['source']).name})")
    print(f"Accuracy: {shown}")
    print(f"Run folder: {out_dir.resolve()}  ({', '.join(summary['files'])}, summary.json)")
    sys.stdout.flush()
    return summary
