"""The course around the lab: challenge, sandbox, student copies, notebook runner, benchmark.

- ``lab.course.challenge``  hidden-trigger challenge: make, package, grade (package: key, make, readme,
                            batch, grade, model_worker)
- ``lab.course.sandbox``    the bubblewrap sandbox untrusted submissions run in
- ``lab.course.student``    student copies of the notebooks: nbgrader's generate_assignment
- ``lab.course.checks``     the exercises' visible checks (they say what is wrong) and references
- ``lab.course.autograde``  grade submitted notebooks with nbgrader's preprocessors (``python -m lab autograde``)
- ``lab.course.notebooks``  execute the notebooks (parameters injected, nbclient)
- ``lab.course.bench``      benchmark: sweep vs forward pass vs naive sweep, default build time
- ``lab.course.timing``     notebooks' wall-clock seconds, kept as output metadata (no stderr boxes)
"""
