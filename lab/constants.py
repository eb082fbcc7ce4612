"""Defaults every layer of the lab shares, defined once.

The pruned and measured layers are the course's (DeepID's last convolution
and the pooling after it); the batch size is what every batched forward pass
uses unless told otherwise (large enough for matrix products to be
efficient, small enough to bound memory at the real 11,547-image scale).
"""

DEFAULT_LAYER = "conv_3"      # the layer whose channels pruning removes
DEFAULT_MEASURE = "pool_3"    # the layer whose mean activation ranks them
DEFAULT_SEED = 1234           # one seed for data, attacks, training and defenses
MODEL_FILE = "models/bd_net.h5"  # the BadNet, relative to a lab root (Lab 3 layout)
BATCH_SIZE = 512              # images per forward pass
