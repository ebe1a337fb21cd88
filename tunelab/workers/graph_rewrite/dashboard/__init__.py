"""The graph-rewrite kind's dashboard page and its queries."""
