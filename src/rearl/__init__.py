"""rearl: REA-RL (reflection-aware online RL) for efficient reasoning.

The core modules (text, reflection, answers, verify, rewards, positions, detect) work on strings,
token ids and tokenizers only; trainer and generation adapters live at the edges.
"""

__version__ = "0.1.0"
