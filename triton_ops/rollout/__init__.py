"""`triton-ops rollout`: state machine, analysis verdicts, and rollout targets."""
