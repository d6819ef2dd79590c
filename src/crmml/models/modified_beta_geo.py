"""MBG/NBD: the modified beta-geometric/NBD model.

Batislam, E. P., Denizel, M. & Filiztekin, A. (2007), "Empirical validation and comparison of models
for customer base analysis", *International Journal of Research in Marketing* 24(3), 201-209; the
conditional expectation follows Wagner & Hoppe (2008).

Identical to BG/NBD except that a customer may also drop out right after the first purchase, so
customers without repeat purchases are not assumed to be alive. In the formulas this shifts the
dropout beta's second parameter by one (``b + x + 1`` where BG/NBD has ``b + x``); the maths is shared
with :mod:`crmml.models.beta_geo` through its ``shift`` argument.
"""

from __future__ import annotations

from crmml.models.beta_geo import BetaGeo

__all__ = ["ModifiedBetaGeo"]


class ModifiedBetaGeo(BetaGeo):
    """MBG/NBD model (Batislam, Denizel & Filiztekin 2007).

    Same parameters, attributes and predictions as :class:`~crmml.models.BetaGeo`; only the dropout
    process differs (dropout is possible right after the first purchase).
    """

    _dropout_shift = 1
