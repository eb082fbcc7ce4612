"""The embedded default: data the lab draws itself, in the course's formats.

- ``lab.synthetic.drawing``     anti-aliased shapes shared by the face renderer and the triggers
- ``lab.synthetic.synthfaces``  SynthFaces, procedural faces (55 x 47 RGB, any number of identities)
- ``lab.synthetic.default``     building the embedded default (data + pruning-aware BadNet) into the Lab 3 layout
"""
