"""The hidden-trigger challenge (the CSAW-HackML 2020 format): make it, hand it out, grade submissions.

Modules, one job each:

- ``key``           folder names, constants, the answer key, the grader folder's SHA-256 check
- ``make``          plan K random attacks, train the BadNets, package student and grader folders
- ``readme``        the student folder's README (task, files, submission contract, score)
- ``batch``         test images as files that leak nothing about their origin
- ``intake``        copy a submission into a private folder (no links followed, sizes capped)
- ``grade``         score submissions (one student or a class, in parallel), the score table
- ``model_worker``  the child process that loads and runs a model submission

Untrusted submissions run in :mod:`lab.course.sandbox`. Everything public is
re-exported here: ``from lab.course import challenge; challenge.grade(...)``.
"""

from lab.course.challenge.batch import write_array, write_batch  # noqa: F401
from lab.course.challenge.grade import (Options, SubmissionFailed, TestSet, format_table, grade,  # noqa: F401
                                        grade_class, grade_one, load_tests, parse_label, printable, resolve_class,
                                        resolve_submissions, score)
from lab.course.challenge.intake import CopyLimits, Refused, Submission, copy_in  # noqa: F401
from lab.course.challenge.key import (ANSWER_KEY, CHALLENGE_KIND, GRADER, INPUT_SCALE, MODEL_SUFFIXES,  # noqa: F401
                                      SCORE_RULE, SCRIPT_SUFFIXES, STUDENT, check_grader, read_answer_key)
from lab.course.challenge.make import (ALL_TO_ALL_TRIGGERS, MULTI_TRIGGERS, WORK_MARKER,  # noqa: F401
                                       ChallengeConfig, badnet_names, derive_seed, draw_seed, make_challenge,
                                       package_challenge, plan_attacks, reference_submission, split_test_rows)
from lab.course.challenge.readme import student_readme  # noqa: F401
