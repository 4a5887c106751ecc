"""The evasion family: adversarial examples at test time, scored by adaptive evaluation.

Two interfaces share one sub-package:

- `evasion` (`harden`): the trainee returns a model of the victim's architecture, e.g.
  after adversarial training; the grader attacks it itself.
- `evasion-preprocess` (`preprocess`): the trainee picks input transforms from a menu of
  ART preprocessors; the grader builds the pipeline in front of the fixed victim and
  attacks the whole of it with BPDA, EOT and a gradient-free attack.

`config.py` is light (pydantic only); everything else imports torch and ART lazily.
"""
