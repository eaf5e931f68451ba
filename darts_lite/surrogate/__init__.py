"""A NAS-Bench-301-style surrogate: tables of evaluated genotypes (the evaluation archive, CSV, JSONL,
NAS-Bench-301 results), encodings, models that predict a genotype's accuracy (LightGBM, a GIN, a random forest),
honest evaluation (held-out and K-fold R^2, Kendall tau, sparse Kendall tau, Spearman, top-k hit rate) and
``task=surrogate``.

From Python: ``model = make_surrogate("gin").fit(load_table("table.csv", accuracy_unit="fraction"))``, then
``model.predict(genotypes)`` (fractions), ``model.save(path)`` and ``load_surrogate(path)``.
"""

from .data import SurrogateDataError, Table, genotype_from_nb301, genotype_to_nb301, load_table, nb301_result, write_table
from .encodings import FlatEncoding, GraphEncoding
from .metrics import heldout, kfold, learning_curve, scores, sparse_kendall_tau
from .models import MODELS, Surrogate, SurrogateFileError, load_surrogate, make_surrogate

__all__ = ["MODELS", "FlatEncoding", "GraphEncoding", "Surrogate", "SurrogateDataError", "SurrogateFileError", "Table",
           "genotype_from_nb301", "genotype_to_nb301", "heldout", "kfold", "learning_curve", "load_surrogate",
           "load_table", "make_surrogate", "nb301_result", "scores", "sparse_kendall_tau", "write_table"]
