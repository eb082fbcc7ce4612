"""Course tooling: the hidden-trigger challenge (make, grade) and the sandbox untrusted submissions run in."""
