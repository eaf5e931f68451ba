"""What `python -m darts_lite` runs: one function per task, over the run machinery in ``darts_lite.run``.

A search run folder holds:
    config.yaml            the resolved config
    genotype.json          the final genotype (Genotype.parse reads it back)
    genotype.txt           the same in the DARTS text format
    genotype_history.jsonl the genotype and op probabilities after every epoch
    normal.dot/.png, reduction.dot/.png   cell pictures (PNG when graphviz's `dot` is installed)
    alphas.pt              the final alphas themselves {"normal": [E, O], "reduce": [E, O]} (NAS-Bench-201: {"cell"})
    op_probabilities.pt    softmax of each edge's alphas, the same shapes: what the heatmaps and the decision show
    alphas_normal.png/.svg, alphas_reduce.png/.svg   heatmaps of the final op probabilities
    metrics.csv            every logged metric, per epoch
    summary.json           the final genotype, metrics and wall time (a failed job of a sweep: its error)
    wandb_run_id.txt       with logger=wandb: the W&B run that resume=true continues
    checkpoints/last.ckpt  the full training state, rewritten every epoch
    selection.csv, genotype_perturbation.json/.txt   with search.selection=perturbation (and task=select): the
                           accuracy of every candidate removal and the genotype those decisions give
"""

from __future__ import annotations

import json
import sys
from typing import Any

from omegaconf import DictConfig

from .config import validate_search, validate_select, validate_train
from .decision import decision, describe
from .measure import count_flops
from .run.artifacts import SearchArtifacts, WandbDashboard
from .run.build import build_datamodule, build_guard, build_lookup, build_search_module, build_train_module
from .run.checkpoints import resume_checkpoint
from .run.folder import WallClock, final_metrics, is_rank_zero, start_run, write_summary
from .run.loggers import wandb_run_ends_with_the_job
from .run.trainer import build_trainer
from .torchfiles import write_text_atomically
from .train import resolve_genotype


def run_search(cfg: DictConfig) -> dict[str, Any]:
    """Validate ``cfg``, search, write the run folder; returns a summary (genotype, metrics, files)."""
    validate_search(cfg)
    ckpt = resume_checkpoint(cfg)  # checked before the run folder is touched
    out_dir = start_run(cfg)
    dm = build_datamodule(cfg, bilevel=True)
    module = build_search_module(cfg, dm)
    clock = WallClock()
    guard, lookup = build_guard(cfg), build_lookup(cfg)
    callbacks = [SearchArtifacts(out_dir), clock, *(c for c in (guard, lookup) if c is not None)]
    trainer = build_trainer(cfg, out_dir, callbacks, ckpt, max_epochs=module.hparams.epochs)
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            trainer.callbacks.append(WandbDashboard(logger, out_dir))
    with wandb_run_ends_with_the_job():
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        metrics = final_metrics(trainer)
        genotype = module.net.genotype()
        decided = decision(module.net.op_probabilities(), genotype)
        summary = {"task": "search", "status": "done", "genotype": genotype.to_text(), "metrics": metrics,
                   "decision": decided, "classes": list(getattr(dm, "classes", ())), "run_dir": str(out_dir),
                   "wall_time_s": clock.elapsed_s()}
        if guard is not None:
            summary["stopped"] = guard.stopped  # None: the search ran all its epochs
        hp = module.hparams
        if hp.selection != "argmax" and trainer.is_global_zero:
            from .tricks.selection import SELECTIONS

            chosen = SELECTIONS[hp.selection](module, dm, seed=cfg.seed)
            chosen.write(out_dir)  # selection.csv, genotype_<selection>.json/.txt
            summary[f"genotype_{hp.selection}"] = chosen.genotype.to_text()
            if not getattr(module.net.relaxation, "trains_alphas", True):
                # alphas that never trained choose nothing: the selection's genotype is the run's
                genotype = chosen.genotype
                summary["genotype"] = genotype.to_text()
                summary["decision"] = decided = decision(module.net.op_probabilities(), genotype)
                write_text_atomically(out_dir / "genotype.json", genotype.to_json() + "\n")
                write_text_atomically(out_dir / "genotype.txt", genotype.to_text() + "\n")
        if lookup is not None and is_rank_zero():
            found = lookup.lookup(genotype.to_text())  # the final cell (a resumed finished run looked nothing up)
            summary["benchmark"] = None if found is None else {"index": found[0], "hp": lookup.hp, **found[1]}
        if write_summary(trainer, out_dir, summary):
            print(f"\nGenotype: {genotype.to_text()}")
            shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("val/", "search/train", "search/arch_acc"))}
            print(f"Final metrics: {shown}")
            print(f"Decision: {describe(decided)}")
            if f"genotype_{hp.selection}" in summary:
                from .tricks.selection import SELECTION_TITLES

                print(f"Genotype ({SELECTION_TITLES.get(hp.selection, hp.selection + ' selection')}): "
                      f"{summary[f'genotype_{hp.selection}']}  (genotype_{hp.selection}.json, selection.csv)")
            if summary.get("benchmark"):
                shown = {k: round(v, 2) for k, v in summary["benchmark"].items() if k.endswith("test_acc")}
                print(f"Benchmark (test accuracy, %): {shown}")
            if guard is not None and guard.stopped:
                print(f"Stopped early: {guard.stopped['reason']}")
            heatmaps = ", ".join(f"alphas_{cell}.png" for cell in module.net.op_probabilities())
            print(f"Run folder: {out_dir.resolve()}  (genotype.json, genotype.txt, cell pictures, {heatmaps} heatmaps, "
                  "metrics.csv, checkpoints/last.ckpt)")
            sys.stdout.flush()
        return summary


def run_select(cfg: DictConfig) -> dict[str, Any]:
    """Perturbation-based selection on the supernet of a finished search's checkpoint (``ckpt_path``): writes the
    argmax genotype.json/.txt, genotype_perturbation.json/.txt, selection.csv and summary.json into the run folder.
    Its progress is saved after every decision (selection_state.pt): a killed selection continues with resume=true
    in the same run folder."""
    from .run.checkpoints import load_search_module
    from .tricks.selection import perturbation_selection, selection_device

    validate_select(cfg)
    out_dir = start_run(cfg)
    clock = WallClock()
    module = load_search_module(cfg.ckpt_path)
    dm = build_datamodule(cfg, bilevel=True)
    argmax = module.net.genotype()
    chosen = perturbation_selection(module, dm, epochs=cfg.search.selection_epochs, batches=cfg.search.selection_batches,
                                    seed=cfg.seed, device=selection_device(cfg.trainer.get("accelerator")),
                                    state_path=out_dir / "selection_state.pt", resume=bool(cfg.get("resume")))
    chosen.write(out_dir)
    genotype = chosen.genotype
    summary = {"task": "select", "status": "done", "ckpt_path": str(cfg.ckpt_path), "genotype": argmax.to_text(),
               "genotype_perturbation": genotype.to_text(), "run_dir": str(out_dir), "wall_time_s": clock.elapsed_s()}
    if is_rank_zero():
        write_text_atomically(out_dir / "genotype.json", argmax.to_json() + "\n")
        write_text_atomically(out_dir / "genotype.txt", argmax.to_text() + "\n")
        write_text_atomically(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        print(f"\nGenotype (argmax of the alphas): {argmax.to_text()}")
        print(f"Genotype (perturbation-based selection): {genotype.to_text()}")
        print(f"Run folder: {out_dir.resolve()}  (genotype.json, genotype_perturbation.json, selection.csv, summary.json)")
        sys.stdout.flush()
    return summary


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """Retrain ``cfg.genotype`` in its evaluation network; prints its size, writes the run folder."""
    validate_train(cfg)
    genotype = resolve_genotype(cfg.genotype)
    ckpt = resume_checkpoint(cfg)
    out_dir = start_run(cfg)
    dm = build_datamodule(cfg, bilevel=False, cutout=cfg.train.cutout)
    module = build_train_module(cfg, dm, genotype)
    params = module.net.num_parameters()
    flops = count_flops(module.net, (dm.in_channels, dm.image_size, dm.image_size))
    size = {"params": params, "params_with_aux": module.net.num_parameters(auxiliary=True), "flops": flops,
            "macs": flops // 2}
    print(f"Genotype: {genotype.to_text()}")
    print(f"Parameters: {params / 1e6:.2f}M (without the auxiliary head); "
          f"{flops / 2e6:.1f}M MACs ({flops / 1e6:.1f}M FLOPs) per {dm.image_size}x{dm.image_size} image")
    if is_rank_zero():
        write_text_atomically(out_dir / "genotype.json", genotype.to_json() + "\n")
    clock = WallClock()
    trainer = build_trainer(cfg, out_dir, [clock], ckpt, max_epochs=module.hparams.epochs)
    with wandb_run_ends_with_the_job():
        for logger in trainer.loggers:
            logger.log_hyperparams({"model/" + k: v for k, v in size.items()})
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        metrics = final_metrics(trainer)
        summary = {"task": "train", "status": "done", "genotype": genotype.to_text(), "genotype_spec": str(cfg.genotype),
                   **size, "metrics": metrics, "classes": list(getattr(dm, "classes", ())), "run_dir": str(out_dir),
                   "wall_time_s": clock.elapsed_s()}
        if write_summary(trainer, out_dir, summary):
            acc = metrics.get("val/acc")
            print(f"Test accuracy: {acc:.4f}" if acc is not None else "Test accuracy: not measured")
            print(f"Run folder: {out_dir.resolve()}  (summary.json, metrics.csv, checkpoints/last.ckpt)")
            sys.stdout.flush()
    return summary


def run_econas(cfg: DictConfig) -> dict:
    """EcoNAS's evolution (``task=econas``); its optional pre-filter reads surrogate files with the surrogate package's
    reader, handed over here so that the two packages stay independent."""
    from .econas.evolution import run_evolution
    from .surrogate.predict import load_model

    return run_evolution(cfg, load_surrogate=load_model)
