"""What every task shares about a run: its folder and summary, loggers, checkpoints, the Trainer, its files.

    folder.py       the run folder, rank-0 writes, the wall clock, summary.json
    loggers.py      metrics.csv (kept across a resume) and Weights & Biases (offline without credentials)
    checkpoints.py  atomic checkpoint writes and which checkpoint a run continues from
    trainer.py      the Lightning Trainer of a run: loggers, last.ckpt every epoch, the config's trainer keys
    build.py        data and Lightning modules from a composed config
    artifacts.py    the files and dashboard media a search leaves (genotype, pictures, heatmaps)

A task (``darts_lite.tasks``) is a short function over these.
"""
