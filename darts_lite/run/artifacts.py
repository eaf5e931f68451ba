"""The files and dashboard media a search leaves: genotype files after every epoch and at the end, cell
pictures, op-probability heatmaps (PNG and SVG), and on W&B per-epoch images and the genotype artifact."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from ..decision import cell_title, decision, decision_metrics
from ..plots import alpha_heatmap, save_figure, wandb_image
from ..search import SearchModule
from ..spaces import space_of
from ..torchfiles import write_text_atomically
from ..viz import dot_to_png, write_dot_pictures

log = logging.getLogger("darts_lite")


class SearchArtifacts(pl.Callback):
    """Writes the genotype after every epoch and the final files of a search into ``out_dir``."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)

    def on_train_start(self, trainer: pl.Trainer, module: SearchModule) -> None:
        # a resumed run repeats the epochs after its checkpoint: drop what a killed run wrote for them
        history = self.out_dir / "genotype_history.jsonl"
        if trainer.is_global_zero and history.is_file():
            kept = [line for line in history.read_text().splitlines()
                    if line and json.loads(line)["epoch"] < trainer.current_epoch]
            write_text_atomically(history, "".join(line + "\n" for line in kept))

    def on_train_epoch_end(self, trainer: pl.Trainer, module: SearchModule) -> None:
        genotype = module.net.genotype()
        # every rank logs (the alphas are equal across ranks): metrics.csv gets the decision measures per epoch
        module.log_dict(decision_metrics(decision(module.net.op_probabilities(), genotype)), on_step=False, on_epoch=True)
        if not trainer.is_global_zero:
            return
        probs = {cell: p.tolist() for cell, p in module.net.op_probabilities().items()}
        record = {"epoch": trainer.current_epoch, "genotype": genotype.to_text(), "probs": probs}
        if module.net.tau is not None:
            record["tau"] = module.net.tau
        with open(self.out_dir / "genotype_history.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        log.info("epoch %d genotype: %s", trainer.current_epoch, genotype.to_text())

    def on_fit_end(self, trainer: pl.Trainer, module: SearchModule) -> None:
        if trainer.is_global_zero:
            write_search_outputs(module, self.out_dir)


def _heatmap(module: SearchModule, probs: torch.Tensor, title: str):
    net = module.net
    return alpha_heatmap(probs, net.edge_labels(), list(net.primitives), title)


def _cell_sources(module: SearchModule) -> dict[str, str]:
    """DOT source per cell picture of the genotype the alphas select now, drawn by the searched space."""
    return space_of(module.net).cell_dots(module.net.genotype())


class WandbDashboard(pl.Callback):
    """Per epoch on the W&B run: a heatmap of op probabilities per cell type and a picture of each derived cell
    (images, under the run's media/images, with a step slider), and the genotype text; at the end the genotype
    files as an artifact."""

    def __init__(self, logger: Any, out_dir: Path):
        self.logger, self.out_dir = logger, Path(out_dir)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: SearchModule) -> None:
        if not trainer.is_global_zero:
            return
        import wandb

        epoch = trainer.current_epoch
        payload: dict[str, Any] = {"trainer/global_step": trainer.global_step, "epoch": epoch}
        for cell, probs in module.net.op_probabilities().items():
            payload[f"alphas/{cell}"] = wandb_image(_heatmap(module, probs, f"{cell_title(cell)}, epoch {epoch}"))
        for name, source in _cell_sources(module).items():
            png = dot_to_png(source)
            if png is not None:
                from PIL import Image

                payload[f"cells/{name}"] = wandb.Image(Image.open(io.BytesIO(png)), caption=f"{name} cell, epoch {epoch}")
        payload["genotype"] = module.net.genotype().to_text()
        self.logger.experiment.log(payload)

    def on_fit_end(self, trainer: pl.Trainer, module: SearchModule) -> None:
        if not trainer.is_global_zero:
            return
        import wandb

        artifact = wandb.Artifact(f"genotype-{self.logger.experiment.id}", type="genotype",
                                  metadata={"genotype": module.net.genotype().to_text()})
        pictures = [f"{name}.dot" for name in _cell_sources(module)]
        for name in ("genotype.json", "genotype.txt", *pictures, "alphas.pt", "op_probabilities.pt"):
            if (self.out_dir / name).is_file():
                artifact.add_file(str(self.out_dir / name))
        self.logger.experiment.log_artifact(artifact)


def write_search_outputs(module: SearchModule, out_dir: Path) -> dict[str, Path]:
    """The final files of a search: genotype.json/.txt, alphas.pt (the alphas themselves), op_probabilities.pt
    (softmax of each edge's alphas), alphas_<cell>.png/.svg (heatmaps of those probabilities), the cell pictures."""
    net = module.net
    genotype = net.genotype()
    files = {"genotype.json": out_dir / "genotype.json", "genotype.txt": out_dir / "genotype.txt"}
    write_text_atomically(files["genotype.json"], genotype.to_json() + "\n")
    write_text_atomically(files["genotype.txt"], genotype.to_text() + "\n")
    torch.save({cell: a.detach().cpu().clone() for cell, a in net.cell_alphas().items()}, out_dir / "alphas.pt")
    probs = net.op_probabilities()
    torch.save({cell: p.cpu() for cell, p in probs.items()}, out_dir / "op_probabilities.pt")
    files["alphas.pt"], files["op_probabilities.pt"] = out_dir / "alphas.pt", out_dir / "op_probabilities.pt"
    for cell, p in probs.items():
        figure = _heatmap(module, p, f"{cell_title(cell)}: softmax(alpha)")
        for path in save_figure(figure, out_dir / f"alphas_{cell}", formats=("png", "svg")):
            files[path.name] = path
    pictures = write_dot_pictures(_cell_sources(module), out_dir)
    for path in [*pictures["dot"], *pictures["rendered"]]:
        files[path.name] = path
    return files
