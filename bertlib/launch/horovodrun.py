"""``horovodrun`` as bertlib starts it on this machine: Horovod's own launcher, less its build check.

``horovodrun --gloo`` first asks whether Horovod was built with Gloo, in a forked process that
imports TensorFlow (``horovod.common.util.gloo_built``): 5–8 s of CPU on 2 cores before any rank
starts, at every launch, for an answer that changes only when Horovod is reinstalled. Here the build
is checked where it changes, once, when Horovod is installed (``horovodrun --check-build`` in
container/install_horovod.sh); a rank whose Horovod lacks Gloo still stops with a message naming that
check (:func:`bertlib.train.distributed.init`). Everything else is ``horovodrun``'s: its arguments,
the rendezvous server, the ranks' environment, the rank-tagged output, the exit code::

    python -m bertlib.launch.horovodrun -np 2 -H localhost:2 --gloo python -m bertlib.train.pretrain ...

Measured: ``horovodrun -np 2 -H localhost:2 --gloo true`` 6.3 s, the same through this module 0.3 s.
"""

import sys

from horovod.runner import launch  # Horovod's launcher only: no TensorFlow


def main() -> int:
    launch.gloo_built = lambda verbose=False: True  # checked at install time (see the module docstring)
    launch.run_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
