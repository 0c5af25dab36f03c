"""Reading finished runs: comparison reports, the regression gate, what differs between runs,
figures."""
