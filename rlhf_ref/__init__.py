"""A literate, runnable reference implementation of preference-alignment algorithms (DPO, TDPO, CPL, A-LoL, PPO, ...), written as nbdev notebooks.

Modules:

- `rlhf_ref.algos`: The algorithm protocol and registry: what an algorithm object provides to the training loop, and the one table of algorithms (with their metadata) that the CLI, the README and the tests read.
- `rlhf_ref.entanglement`: Why DPO can lower the chosen response's log-probability (or raise the rejected one's): a margin loss moves the two log-probs through gradients that share most of their direction. Per-example gradients, the paper's condition (and the reference code's variant), a logging hook for any training run, and the mitigations as far as the paper states them.
- `rlhf_ref.experiments`: Seeded experiments: run a configuration over seeds, report the mean with a 95% interval, compare two arms on paired seeds, give a verdict that can say "could not tell", and draw curves with bands. Every claim on the site goes through these, and the cell that makes a claim prints the numbers its prose quotes.
- `rlhf_ref.health`: The SimpleDC study (Rahman et al., arXiv 2401.15043) at this project's scale: supervised fine-tuning on written simplifications of digestive-cancer education text, then RL on *unlabelled* source sentences with a reward that needs no reference simplification, compared with minus-FKGL (the readability-only reward the paper argues against), the classifier alone, SARI against references (an upper bound that needs labels) and A-LoL on the SFT model's own samples."""

__version__ = "0.1.0"
