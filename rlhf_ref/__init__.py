"""A literate, runnable reference implementation of preference-alignment algorithms (DPO, TDPO, CPL, A-LoL, PPO, ...), written as nbdev notebooks.

Modules:

- `rlhf_ref.algos`: The algorithm protocol and registry: what an algorithm object provides to the training loop, and the one table of algorithms (with their metadata) that the CLI, the README and the tests read."""

__version__ = "0.1.0"
