"""The Faust worker: envelopes in, per-subject state and detectors, decisions out."""
