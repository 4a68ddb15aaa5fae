"""Everything after training: load a trained model, crop test faces by a protocol, score them, name the results.

- `trained`: `load_trained` (a checkpoint's model, config, crop rule and optional label adapter),
  used by every command that reads a checkpoint, and the scoring of prepared faces.
- `protocols`: which box each test face is cut from (`landmarks`, `jitter`, `detector`).
- `plan`: the test plan (which sets, which protocols, the headline set) and the one spelling
  of a result key, `test_<set>[_<protocol>]/<metric>`.
"""
