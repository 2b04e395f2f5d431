"""``moto_server`` whose SageMaker training jobs run until the test lets them end.

moto 5.2.5 creates every training job ``Completed`` (``FakeTrainingJob.__init__``) and has no
StopTrainingJob. This server gives its training jobs moto's own state machinery
(``ManagedState``, model ``sagemaker::training_job``: InProgress → Completed, advanced by each
DescribeTrainingJob) so that a test steers them through moto's API, as for moto's other services::

    POST /moto-api/state-manager/set-transition
         {"model_name": "sagemaker::training_job", "transition": {"progression": "manual", "times": 10**9}}

(the default stays moto's: ``immediate``, i.e. Completed at the first describe; setting a
transition restarts the count, so ``manual`` ``times: N`` = Completed at the N-th describe from then), and adds
StopTrainingJob (the job becomes ``Stopped``); with ``$MOTO_TRAINING_REQUESTS`` set, every
CreateTrainingJob request is also kept as sent (a file per request). Everything else — requests, the other services,
CloudWatch Logs — is moto's. Run as ``python moto_job_states.py -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

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


def _create_training_job(self):
    """moto's CreateTrainingJob, the request kept verbatim in ``$MOTO_TRAINING_REQUESTS/<n>-<name>.json``
    when set (moto's describe drops its Environment and MetricDefinitions; the image runner needs them)."""
    folder = os.environ.get("MOTO_TRAINING_REQUESTS")
    if folder:
        request = json.loads(self.body)
        count = len(list(Path(folder).glob("*.json")))
        path = Path(folder) / f"{count:03d}-{request['TrainingJobName']}.json"
        path.with_suffix(".tmp").write_text(json.dumps(request))
        path.with_suffix(".tmp").rename(path)
    return _create(self)


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
_create = responses.SageMakerResponse.create_training_job


def install() -> None:
    """Patch moto (in the server process only)."""
    state_manager.set_transition = _set_transition
    models.FakeTrainingJob.__init__ = _job_init
    models.FakeTrainingJob.response_object = property(_job_response)
    responses.SageMakerResponse.stop_training_job = _stop_training_job
    responses.SageMakerResponse.create_training_job = _create_training_job
    state_manager.register_default_transition(MODEL, transition={"progression": "immediate"})


def serving(log_path: Path, env: dict | None = None):
    """Run this server on a free port of 127.0.0.1 (bounded: 60 s to come up): a ``with`` block's URL."""
    from moto_serving import serving as serve  # tests/ is on the path of the tests, not of this script's server

    return serve([sys.executable, __file__], log_path, env=env)


def steer(endpoint: str, transition: dict) -> None:
    """moto's set-transition for the training jobs (see the module docstring)."""
    import requests

    r = requests.post(
        f"{endpoint}/moto-api/state-manager/set-transition",
        data=json.dumps({"model_name": MODEL, "transition": transition}),
        timeout=10,
    )
    if r.status_code != 201:
        raise RuntimeError(f"set-transition: {r.status_code} {r.text}")


if __name__ == "__main__":
    from moto.server import main

    install()
    main(sys.argv[1:])
