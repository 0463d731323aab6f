"""A recipe's way to a trained run: build the experiment, train it into a run directory, load the run again.

:mod:`.experiment` builds every part a recipe describes and trains it (nothing on disk); :mod:`.directory` is the
run directory that training writes and a resumed run continues from; :mod:`.execute` is what ``descend run`` does
(one network or an :mod:`.ensemble` of them, into a run directory); :mod:`.launch` starts the processes of a
data-parallel run; :mod:`.record` is ``inference.json``, what prediction needs; :mod:`.loaded` is a run read back for
prediction and evaluation; :mod:`.workflow` is the same from Python, with the user's own model and data.
"""
