"""The `graph-rewrite` kind: a model's dataflow graph optimised by verified
substitutions, searched by an RL agent (X-RLflow), greedy and backtracking (TASO) or at
random."""
