"""Files the lab reads and writes: course h5 data, models, manifests, face images.

- ``lab.io.data``      CSAW-HackML h5 files: read, check, write, find layouts (``Dataset``: NHWC float32 0..255)
- ``lab.io.models``    DeepID architecture; loading/saving models with input scale, SHA-256, metadata
- ``lab.io.manifest``  SHA-256 manifests of what a build wrote
- ``lab.io.images``    PNG/JPEG face crops in, classes out (the submission contract)
"""
