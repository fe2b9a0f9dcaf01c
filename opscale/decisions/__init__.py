"""Decisions as opscale records and explains them: ``record`` (the ``DecisionView`` and its layout in the
ledger), ``explain`` (the narrative ``opscale explain`` shows), ``deployment`` (a stored spec version).
Pure apart from reading ``DecisionRecord`` values; the decision service stores and serves them."""
