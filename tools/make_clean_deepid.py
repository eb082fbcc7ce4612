"""A clean DeepID on the embedded default's training identities (the gate's false-positive check).

    PYTHONPATH=. python tools/make_clean_deepid.py --out build/clean_default/models/clean_net.h5

Re-renders the default's clean training split exactly as ``make_default``
does (same seeds), trains DeepID on it without any poison (the default's
clean phase: 10 epochs) and saves it with the lab's metadata. Test the gate
on it with the default's clean validation and test files.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=1234, help="the default's seed (data)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train", help="train on this course-format h5 instead of the default's re-rendered split")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np

    from lab.attacks import training
    from lab.io import models
    from lab.synthetic import synthfaces
    from lab.synthetic.default import DefaultConfig, _render, to_model_input
    from lab.seed import set_seed

    config = DefaultConfig()
    set_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    identities = synthfaces.make_identities(config.n_identities, seed=args.seed)
    rng.integers(config.n_identities)  # the default draws its target first; keep the stream aligned
    if args.train:
        from lab.io import data

        train = data.load_h5(args.train)
        x, labels = train.x, train.y
    else:
        labels, faces = _render(identities, config.train_per_identity, args.seed * 10 + 1, config.nuisance, rng,
                                False, "train")
        x = to_model_input(faces.images)
    net = models.build_deepid(int(labels.max()) + 1, input_scale="raw", name="clean_net")
    training.fit(net, x, labels, args.epochs, config.training, args.seed, progress=False)
    models.save_model(net, args.out, "raw", f"clean DeepID, {args.epochs} epochs on the default's training split",
                      force=args.force)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
