"""``moto_server`` whose SageMaker training jobs run until the test lets them end.

moto 5.2.5 creates every training job ``Completed`` (``FakeTrainingJob.__init__``) and has no
StopTrainingJob. This server gives its training jobs moto's own state machinery
(``ManagedState``, model ``sagemaker::training_job``: InProgress → Completed, advanced by each
DescribeTrainingJob) so that a test steers them through moto's API, as for moto's other services::

    POST /moto-api/state-manager/set-transition
         {"model_name": "sagemaker::training_job", "transition": {"progression": "manual", "times": 10**9}}

(the default stays moto's: ``immediate``, i.e. Completed at the first describe; setting a
transition restarts the count, so ``manual`` ``times: N`` = Completed at the N-th describe from then), and adds
StopTrainingJob (the job becomes ``Stopped``). Everything else — requests, the other services,
CloudWatch Logs — is moto's. Run as ``python moto_job_states.py -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import sys

from moto.moto_api import state_manager
from moto.moto_api._internal.managed_state_model import ManagedState
from moto.sagemaker import models, responses

MODEL = "sagemaker::training_job"
_STATES: dict[str, ManagedState] = {}
_init = models.FakeTrainingJob.__init__
_response_object = models.FakeTrainingJob.response_object.fget


def _job_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.training_job_status = self.secondary_status = "InProgress"
    self.training_end_time = None
    _STATES[self.arn] = ManagedState(MODEL, [("InProgress", "Completed")])


def _job_response(self):
    state = _STATES[self.arn]
    if self.training_job_status not in ("Stopped", "Failed"):
        state.advance()
        self.training_job_status = self.secondary_status = state.status
        if self.training_job_status == "Completed" and self.training_end_time is None:
            self.training_end_time = models.utcnow()
    return _response_object(self)


def _stop_training_job(self):
    job = self.sagemaker_backend.training_jobs[self._get_param("TrainingJobName")]
    job.training_job_status = job.secondary_status = "Stopped"
    job.training_end_time = models.utcnow()
    return responses.EmptyResult()


def _set_transition(model_name, transition):
    """moto's set_transition, restarting the describe count of every job: ``manual`` with ``times: N``
    then means "Completed at the N-th DescribeTrainingJob from now"."""
    _set(model_name, transition)
    for state in _STATES.values():
        state._tick = 0


_set = state_manager.set_transition
state_manager.set_transition = _set_transition
models.FakeTrainingJob.__init__ = _job_init
models.FakeTrainingJob.response_object = property(_job_response)
responses.SageMakerResponse.stop_training_job = _stop_training_job
state_manager.register_default_transition(MODEL, transition={"progression": "immediate"})

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
