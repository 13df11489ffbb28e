"""Settlement: period close, statements, netting and reconciliation: coming next."""
