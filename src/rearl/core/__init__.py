"""The framework-free core of REA-RL: strings, token ids and tokenizers only.

* `tokens`, `text`: exact token offsets, the thinking/answer split and the paragraph splitter;
* `reflection`: reflection words, density and the calibrated threshold;
* `answers`, `normalize`, `verify`: final-answer extraction and math-verify in a killable worker pool;
* `rewards`: accuracy, length and reflection rewards with TRL's reward-function signature;
* `detectors`, `positions`: where the answer was reached (oracle, reflection model, naive baselines)
  and the Strong / Normal / Weak cut;
* `revision`, `groups`: token-exact sequential revision and the group policies;
* `prompts`, `traces`, `io`: chat prompts, trace files, JSONL with atomic writes.

Nothing here imports a trainer, a backend or the CLI (tests/test_layout.py checks it).
"""
