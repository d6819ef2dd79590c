"""crmml: predicted customer value, pyramid tier and at-risk flags from a transaction log."""
