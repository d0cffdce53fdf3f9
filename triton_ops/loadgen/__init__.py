"""Load generation against Triton: open-loop (Poisson) and closed-loop, with latency capture."""
