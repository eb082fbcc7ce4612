"""The course around the lab: challenge, student copies, notebook runner, benchmark.

- ``lab.course.challenge``  hidden-trigger challenge: make, package, grade
- ``lab.course.student``    student copies of the notebooks (solutions taken out)
- ``lab.course.notebooks``  execute the notebooks (parameters injected, nbclient)
- ``lab.course.bench``      benchmark: sweep vs forward pass vs naive sweep, default build time
"""
