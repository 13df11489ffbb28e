"""Settlement: price lists, period close, statements, multilateral netting, reconciliation of
partner files, exports and finance reports (docs/settlement.md)."""
