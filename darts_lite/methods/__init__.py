"""The DARTS family beyond DARTS and GDAS, one module per method; each is what its ``conf/search/<name>.yaml`` builds:

- ``drnas``       DrNAS: Dirichlet-sampled op weights (``DirichletRelaxation``), optional KL regulariser
- ``snas``        SNAS: soft Gumbel-softmax op weights with an annealed temperature (``SoftGumbelRelaxation``)
- ``beta_darts``  beta-DARTS: the Beta-Decay regulariser on softmax DARTS (``BetaDecay``)
- ``fairdarts``   FairDARTS: independent sigmoid op weights (``SigmoidRelaxation``) and the zero-one loss
- ``darts_minus`` DARTS-: an auxiliary skip connection on every edge, decaying to zero (``AuxiliarySkipRelaxation``)

A method is a relaxation (``darts_lite.relax``: alphas -> op weights) and, if it has one, a regulariser
(``darts_lite.regularizers``: a term of the architecture loss); the supernet, the bilevel step, logging, resume and
the genotype are shared. docs/guides/search.md has a section per method.
"""
