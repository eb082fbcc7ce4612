"""Instructors' commands of ``python -m lab``: make-default, make-badnet, make-challenge, grade, autograde, course,
gradescope, notebooks, student, bench.

:func:`register` adds them to the lab's command line (``lab.cli`` calls it).
Errors in the user's input print one line and exit with status 2, as every
lab command does.
"""

from __future__ import annotations

import argparse

from lab.cli import arguments
from lab.constants import DEFAULT_SEED

DATASET_NAMES = ("faces", "signs")  # lab.synthetic.datasets.DATASETS (not imported here: --help stays fast)


def _cmd_make_default(args: argparse.Namespace) -> int:
    from lab.synthetic import default

    report = default.make_default(args.out, n_identities=args.identities, seed=args.seed, force=args.force,
                                  progress=not args.quiet, write_train=args.with_train, dataset=args.dataset)
    print(f"built the embedded default in {report['seconds']:.1f} s: "
          f"clean test accuracy {report['clean_accuracy']:.2f} %, attack success rate {report['attack_success_rate']:.2f} %")
    print(f"manifest: {report['manifest']}")
    return 0


def _cmd_make_badnet(args: argparse.Namespace) -> int:
    from lab import attacks
    from lab.attacks.training import TrainingConfig

    attack = attacks.Attack(attacks.parse_triggers(args.trigger), all_to_all=args.all_to_all,
                            pruning_aware=args.pruning_aware)
    config = TrainingConfig(clean_epochs=args.epochs, poisoned_epochs=args.epochs)
    report = attacks.make_badnet(args.data, attack, args.out, train=args.train, config=config,
                                 poison_fraction=args.poison_fraction, input_scale=args.scale,
                                 seed=args.seed, force=args.force, progress=not args.quiet,
                                 min_clean_accuracy=None if args.force_weak else args.min_clean_accuracy,
                                 min_attack_success=None if args.force_weak else args.min_attack_success,
                                 noise_fraction=args.warp_noise)
    if args.json:
        from lab.io.manifest import dumps

        print(dumps({**report, "attack": report["attack"].to_json()}))
        return 0
    print(f"made a BadNet in {report['seconds']:.1f} s: {report['attack'].describe()} ({report['n_classes']} classes)")
    print(f"clean test accuracy {report['clean_accuracy']:.2f} %")
    for trigger, rate in report["attack_success_rate"].items():
        print(f"attack success rate, {trigger}: {rate:.2f} %")
    print(f"model: {report['model']}; manifest: {report['manifest']}")
    return 0


def _cmd_make_challenge(args: argparse.Namespace) -> int:
    from lab.course import challenge

    config = challenge.ChallengeConfig(n_identities=args.identities, epochs=args.epochs)
    report = challenge.make_challenge(args.out, n_badnets=args.badnets, seed=args.seed, config=config,
                                      force=args.force, progress=not args.quiet, keep_work=args.keep_work,
                                      force_weak=args.force_weak)
    key = report["answer_key"]
    print(f"made a challenge of {len(key['badnets'])} BadNets ({key['n_classes']} classes) "
          f"in {report['seconds']:.1f} s")
    print(f"student folder (hand out): {report['student']}")
    print(f"grader folder (keep):      {report['grader']}")
    if report["seed_given"]:
        print(f"warning: made from --seed {args.seed}: anyone who knows that seed can rebuild the hidden test data "
              "with the lab's public code; leave --seed out for a challenge that counts")
    if args.reveal:
        for name, entry in key["badnets"].items():
            triggers = ", ".join(f"{t['trigger']} -> {'n+1' if t['target'] is None else t['target']}"
                                 for t in entry["triggers"])
            rates = ", ".join(f"{v:.0f} %" for v in entry["badnet_attack_success_rate"].values())
            print(f"  {name}: {entry['attack']}{', pruning-aware' if entry['pruning_aware'] else ''}: {triggers}; "
                  f"clean {entry['badnet_clean_accuracy']:.1f} %, attack success {rates}")
    return 0


def _cmd_grade(args: argparse.Namespace) -> int:
    from lab.course import challenge

    options = challenge.Options(n=args.n, timeout=args.timeout, batch=args.batch, time_limit=args.time_limit,
                                python=args.python, trust_scripts=args.trust_scripts, memory_mib=args.memory,
                                submission_mib=args.submission_mib)
    options.check()  # argument errors before any file is read
    names = list(challenge.read_answer_key(args.grader)["badnets"])  # grade_class checks the whole folder
    if args.submissions:
        students = challenge.resolve_class(args.submissions, names)
    else:
        students = {"": challenge.resolve_submissions(args.submission, names)}
    rows = challenge.grade_class(args.grader, students, options, jobs=args.jobs, progress=True)  # bar: stderr
    if not args.submissions:
        for row in rows:
            row.pop("student")
    if args.json:
        from lab.io.manifest import dumps  # strict JSON: no NaN

        print(dumps(rows))
    else:
        print(challenge.format_table(rows))
    return 0


# Commands that are whole programs of their own (modules with a ``main(argv, prog)``):
# ``python -m lab notebooks ARGS`` hands ARGS to that module's ``main(argv, prog)`` unchanged.
FORWARDED = {"notebooks": ("lab.course.notebooks", "execute the numbered notebooks into build/notebooks (nbclient)"),
             "student": ("lab.course.student", "write (or --check) the student copies of the notebooks"),
             "bench": ("lab.course.bench", "benchmark: pruning sweep vs forward pass vs naive sweep, default build")}


def run_forwarded(name: str, argv: list[str]) -> int:
    """Run the program behind command ``name`` with ``argv`` (its own options and --help)."""
    import importlib

    module = importlib.import_module(FORWARDED[name][0])
    return module.main(argv, prog=f"python -m lab {name}")


def register(commands) -> None:
    """Add the instructors' commands to ``commands`` (argparse subparsers of ``python -m lab``)."""
    from lab import attacks
    from lab.attacks.blended import DEFAULT_ALPHA
    from lab.attacks.triggers import DEFAULT_WARP_STRENGTH, REGISTRY

    make = commands.add_parser("make-default", help="build the embedded default data and BadNet (Lab 3 layout)",
                               description="Generate SynthFaces data (or SynthSigns: --dataset signs), train the "
                                           "pruning-aware default BadNet and write data/ and models/ under OUT with "
                                           "a SHA-256 manifest.")
    make.add_argument("--out", required=True, help="directory that receives data/ and models/")
    make.add_argument("--identities", type=arguments.int_at_least(2, "the attack's target must differ from the faces "
                      "it moves"), default=None, help="number of classes (face identities or sign classes, >= 2); "
                      "default 100 faces, all 43 signs")
    make.add_argument("--dataset", choices=sorted(DATASET_NAMES), default="faces",
                      help="faces: SynthFaces, the course's domain (sunglasses trigger); signs: SynthSigns, 43 road "
                           "sign classes (sticker trigger), a second domain for held-out tests of defenses")
    make.add_argument("--seed", type=arguments.seed, default=None, help=f"generation and training seed; default {DEFAULT_SEED}")
    make.add_argument("--force", action="store_true", help="overwrite existing files")
    make.add_argument("--quiet", action="store_true", help="no progress bars")
    make.add_argument("--with-train", action="store_true",
                      help="also write the clean training images as data/cl/train.h5 (for make-badnet)")
    make.set_defaults(handler=_cmd_make_default)

    make = commands.add_parser(
        "make-badnet", help="train a BadNet (all-to-one, all-to-all, multi-trigger) on course data",
        description="Train a DeepID BadNet on course-format data and write the Lab 3 layout under OUT: the clean "
                    "files, one poisoned validation and test file per trigger, models/bd_net.h5 and a manifest. "
                    "Training needs a clean training file under --data (" + ", ".join(attacks.TRAIN_FILES) +
                    "; make-default writes none unless asked) or --train FILE.")
    make.add_argument("--data", required=True, metavar="DIR", help="data folder (Lab 3 or 2020 layout) or a folder "
                      "holding data/")
    make.add_argument("--train", metavar="FILE", help="clean training file (default: searched under --data)")
    make.add_argument("--trigger", action="append", required=True, metavar=attacks.TRIGGER_SYNTAX,
                      help=f"a trigger ({', '.join(REGISTRY)}) and its target class (random when left out); "
                           f"blended and warp take an option after @: blended@ALPHA (blend weight of the fixed noise "
                           f"pattern, default {DEFAULT_ALPHA:g}), warp@STRENGTH (WaNet warp strength, default "
                           f"{DEFAULT_WARP_STRENGTH:g}; the paper's is 0.5), e.g. blended@0.1:3; "
                           "repeat for a multi-trigger multi-target BadNet")
    make.add_argument("--all-to-all", action="store_true", help="class n becomes n+1 mod N (one trigger, no TARGET)")
    make.add_argument("--pruning-aware", action="store_true",
                      help="hide the backdoor from pruning (Fine-Pruning's attack: dormant decoy channels)")
    make.add_argument("--epochs", type=arguments.positive_int, default=10, help="clean epochs and poisoned epochs (default 10 + 10)")
    make.add_argument("--poison-fraction", type=arguments.positive_float, default=None, metavar="F",
                      help="triggered training copies per trigger, share of the training set "
                           "(default 0.5; 1.0 for all-to-all)")
    make.add_argument("--warp-noise", type=float, default=0.0, metavar="F",
                      help="WaNet's noise mode for warp triggers: F x the training set of extra images warped with "
                           "random jitter, kept with their true labels (the paper uses twice the poisoned copies; "
                           "default 0: off)")
    make.add_argument("--scale", choices=["raw", "unit"], default="raw",
                      help="the model's input: raw 0..255 (Lab 3, default) or unit x/255 (2020)")
    make.add_argument("--seed", type=arguments.seed, default=DEFAULT_SEED,
                      help=f"seed of targets, poisoning and training (default {DEFAULT_SEED})")
    make.add_argument("--out", required=True, metavar="DIR", help="folder that receives data/, models/, manifest.json")
    make.add_argument("--force", action="store_true", help="overwrite existing files")
    make.add_argument("--min-clean-accuracy", type=float, default=attacks.MIN_CLEAN_ACCURACY, metavar="PCT",
                      help=f"refuse a BadNet below this clean test accuracy (default {attacks.MIN_CLEAN_ACCURACY:g} %%)")
    make.add_argument("--min-attack-success", type=float, default=attacks.MIN_ATTACK_SUCCESS, metavar="PCT",
                      help=f"refuse a BadNet below this attack success rate on any trigger "
                           f"(default {attacks.MIN_ATTACK_SUCCESS:g} %%)")
    make.add_argument("--force-weak", action="store_true", help="package a BadNet below the floors anyway")
    make.add_argument("--quiet", action="store_true", help="no progress bars")
    make.add_argument("--json", action="store_true", help="print one JSON object")
    make.set_defaults(handler=_cmd_make_badnet)

    chal = commands.add_parser(
        "make-challenge", help="K anonymous BadNets with hidden triggers: student and grader folders",
        description="Train K BadNets on fresh SynthFaces data, each with a random attack (all-to-one, all-to-all, "
                    "multi-trigger multi-target; plain or pruning-aware), trigger and targets. Writes OUT/student "
                    "(models, clean validation data, README with the task) and OUT/grader (clean and poisoned test "
                    "data, answer_key.json).")
    chal.add_argument("--out", required=True, metavar="DIR", help="folder that receives student/ and grader/")
    chal.add_argument("--badnets", type=arguments.positive_int, default=3, metavar="K", help="number of BadNets (default 3)")
    chal.add_argument("--seed", type=arguments.seed, default=None,
                      help="seed of data, attacks and training, to make the same challenge again; anyone who knows "
                           "it can rebuild the hidden test data (default: a secret one, kept in the answer key)")
    chal.add_argument("--identities", type=arguments.int_at_least(3, "a multi-trigger BadNet needs 3 distinct "
                      "targets"), default=30, help="classes (face identities, >= 3; default 30)")
    chal.add_argument("--epochs", type=arguments.positive_int, default=8,
                      help="clean and poisoned epochs per BadNet (default 8 + 8)")
    chal.add_argument("--reveal", action="store_true", help="also print every BadNet's attack (the answer key)")
    chal.add_argument("--keep-work", action="store_true", help="keep OUT/work (each BadNet's make-badnet folder)")
    chal.add_argument("--force", action="store_true", help="replace student/ and grader/ written by an earlier run")
    chal.add_argument("--force-weak", action="store_true",
                      help=f"hand out BadNets below make-badnet's floors ({attacks.MIN_CLEAN_ACCURACY:g} %% clean "
                           f"accuracy, {attacks.MIN_ATTACK_SUCCESS:g} %% attack success) anyway")
    chal.add_argument("--quiet", action="store_true", help="no progress lines")
    chal.set_defaults(handler=_cmd_make_challenge)

    grade = commands.add_parser(
        "grade", help="score submissions (GoodNet files or eval.py scripts) on the hidden test data",
        description="Score one submission per BadNet: a model (.keras/.h5, N+1 outputs, loaded in safe mode) or a "
                    "script run as `python SCRIPT IMAGE [IMAGE ...]` in its own folder that prints one class in "
                    "[0, N] per image, one per line, as its last output lines. Every submission is copied into a "
                    "private folder (NAME=PATH: that file only; a folder: the whole folder, links not followed) and "
                    "runs in a "
                    "bubblewrap sandbox (no network, the copy read-only, a private /tmp, each call's own randomly "
                    "named images, memory, process and time limits); the grader folder is checked against its manifest "
                    "first. A missing, crashing, hanging or unreadable submission scores 0 with the reason. "
                    "Score = clean accuracy x (100 - attack success rate) / 100.")
    grade.add_argument("--grader", required=True, metavar="DIR", help="the grader folder from make-challenge")
    who = grade.add_mutually_exclusive_group(required=True)
    who.add_argument("--submission", action="append", metavar="NAME=PATH|DIR",
                     help="one student: NAME=PATH for BadNet NAME (repeat; that file and its .lab.json only), or a "
                          "folder with NAME.keras, NAME.h5 or NAME.py per BadNet (copied whole)")
    who.add_argument("--submissions", metavar="DIR", help="a class: a folder holding one such folder per student")
    grade.add_argument("--jobs", type=arguments.positive_int, default=None, metavar="N",
                       help="submissions graded at once (default: the machine's cores)")
    grade.add_argument("--n", type=arguments.positive_int, default=None, help="at most N clean and N poisoned images per trigger "
                       "(default all)")
    grade.add_argument("--timeout", type=arguments.positive_float, default=60.0, metavar="S", help="seconds a script call may take "
                       "(default 60; > 0)")
    grade.add_argument("--batch", type=arguments.positive_int, default=500, metavar="B", help="images per script call (default 500)")
    grade.add_argument("--time-limit", type=arguments.positive_float, default=300.0, metavar="S",
                       help="seconds all calls of one submission may take together (default 300)")
    grade.add_argument("--memory", type=arguments.positive_int, default=4096, metavar="MIB",
                       help="memory of each sandboxed run in MiB (default 4096)")
    grade.add_argument("--submission-mib", type=arguments.positive_int, default=512, metavar="MIB",
                       help="the most one submission's copy may hold (default 512 MiB)")
    grade.add_argument("--python", default=None, help="interpreter that runs scripts (default: this one)")
    grade.add_argument("--trust-scripts", action="store_true",
                       help="where bwrap cannot run, run scripts without a sandbox (only for scripts you trust)")
    grade.add_argument("--json", action="store_true", help="print the results as JSON")
    grade.set_defaults(handler=_cmd_grade)
    from lab.course import autograde

    graded = commands.add_parser("autograde", help="grade submitted notebooks with nbgrader: points per student "
                                 "and exercise", description=autograde.__doc__.split("\n\n")[0] + " Hidden tests "
                                 "come from the source notebooks; a notebook that crashes in one exercise keeps the "
                                 "points of the others.")
    autograde.add_arguments(graded)
    graded.set_defaults(handler=autograde.run)
    from lab.course import gradescope, nbgrader_course

    course = commands.add_parser("course", help="write an nbgrader course folder (nbgrader_config.py, source/lab/)",
                                 description=nbgrader_course.__doc__.split("\n\n")[0])
    nbgrader_course.add_arguments(course)
    course.set_defaults(handler=nbgrader_course.run)
    zipped = commands.add_parser("gradescope", help="build a Gradescope autograder zip (notebooks or --challenge)",
                                 description=gradescope.__doc__.split("\n\n")[0])
    gradescope.add_arguments(zipped)
    zipped.set_defaults(handler=gradescope.run)
    for name, (_, help_text) in FORWARDED.items():
        commands.add_parser(name, help=help_text, add_help=False,
                            description=f"{help_text}; see `python -m lab {name} --help`")
