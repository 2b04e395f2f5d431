"""``bertlib launch image``: the CodeBuild build of the training image, its requests sent to a real
``moto_server`` with real boto3.

moto 5.2.5 stands in for S3, ECR, IAM, STS and CodeBuild. Its CodeBuild keeps projects and builds but
ignores StartBuild's overrides (source location, environment variables: those are checked on the request
as sent), has no UpdateProject (a test answers that one request itself, through botocore's ``before-call``
event) and reports every build SUCCEEDED at once, so the failed build is a response shaped as the
CodeBuild API reference's ``Build`` (BatchGetBuilds: ``phases[].contexts[]``, ``logs.deepLink``), answered
the same way. What only AWS shows: the build itself (Docker on CodeBuild, the DLC pull, the push), the
policy being enough, IAM propagation, CodeBuild keeping the zip's file modes.
"""

import io
import json
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from bertlib import launch_cli, notebook
from bertlib.core.config import LaunchConfig
from bertlib.core.errors import ConfigError
from bertlib.launch import image

ACCOUNT = "123456789012"  # moto's


@pytest.fixture()
def names():
    """Resource names of one test (moto_server keeps its state for the whole session)."""
    sfx = uuid.uuid4().hex[:8]
    return {
        "repository": f"bertlib-training-{sfx}",
        "project": f"bertlib-image-{sfx}",
        "role_name": f"bertlib-cb-{sfx}",
    }


def config(aws_env, names, **overrides) -> image.ImageBuildConfig:
    values = dict(region=aws_env["region"], s3_prefix=f"s3://{aws_env['bucket']}/bertlib", poll_seconds=0, **names)
    return image.ImageBuildConfig(**{**values, **overrides})


def operations(info) -> list[str]:
    return [f"{r['service']} {r['operation']}" for r in info["requests"]]


def sent(info, operation) -> dict:
    (params,) = [r["params"] for r in info["requests"] if f"{r['service']} {r['operation']}" == operation]
    return params


def answer(session, operation: str, response: dict, calls: list | None = None):
    """Answer ``operation`` (``codebuild.BatchGetBuilds``) on ``session``'s clients with ``response``, as
    if from AWS (botocore's ``before-call`` event), recording the request's parameters in ``calls``."""

    def handler(params, **_):
        if calls is not None:
            calls.append(json.loads(params["body"]))
        return AWSResponse("https://codebuild.example", 200, {}, None), response

    session.events.register(f"before-call.{operation}", handler)


def context_files(tmp_path, script: Path) -> set[str]:
    out = tmp_path / f"ctx-{uuid.uuid4().hex[:6]}"
    subprocess.run(["bash", str(script), str(out)], check=True)
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def test_first_run_creates_everything_and_a_rerun_creates_nothing_again(aws_env, names, repo_root, tmp_path):
    session = boto3.Session(region_name=aws_env["region"])
    lines: list[str] = []
    info = image.build(config(aws_env, names), session=session, out=lines.append)
    sha = info["context"]["sha256"]
    key = f"bertlib/staged/image/{sha}/context.zip"
    assert info["status"] == "SUCCEEDED" and info["placeholders"] == []
    assert info["image_uri"] == f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{names['repository']}:tf2.21-{sha[:12]}"
    assert lines[-1] == f"pushed {info['image_uri']}" and any(line.startswith("  COMPLETED") for line in lines)

    # S3: the zip holds exactly what container/context.sh assembles — no .venv, runs/, tests, caches
    s3 = session.client("s3")
    obj = s3.get_object(Bucket=aws_env["bucket"], Key=key)
    assert obj["Metadata"] == {"sha256": sha}
    zf = zipfile.ZipFile(io.BytesIO(obj["Body"].read()))
    zipped = set(zf.namelist())
    assert zipped == context_files(tmp_path, repo_root / "container" / "context.sh")
    assert {
        "container/Dockerfile",
        "container/install_horovod.sh",
        "container/system_packages.sh",
        "container/build_and_push.sh",
        "container/context.sh",
        "container/dlc_registry.sh",
        "requirements.txt",
        "pyproject.toml",
        "bertlib/__init__.py",
        "bertlib/launch/sm_entry.py",
    } <= zipped
    assert not [n for n in zipped if n.startswith((".venv", "runs/", "tests/", ".git")) or "__pycache__" in n]
    assert zf.getinfo("container/build_and_push.sh").external_attr >> 16 == 0o100755

    # ECR: the repository, scanned on push
    (repo,) = session.client("ecr").describe_repositories(repositoryNames=[names["repository"]])["repositories"]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}

    # IAM: CodeBuild (of this account's project) may assume the role; the policy is scoped
    iam = session.client("iam")
    role = iam.get_role(RoleName=names["role_name"])["Role"]
    assert role["AssumeRolePolicyDocument"] == image.trust_policy(ACCOUNT, names["project"])
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "codebuild.amazonaws.com"} and statement["Action"] == "sts:AssumeRole"
    policy = iam.get_role_policy(RoleName=names["role_name"], PolicyName="bertlib-image-build-us-east-1")
    grants = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert all(s["Effect"] == "Allow" for s in grants.values())
    assert grants["ReadBuildContext"]["Action"] == ["s3:GetObject", "s3:GetObjectVersion"]
    assert grants["ReadBuildContext"]["Resource"] == f"arn:aws:s3:::{aws_env['bucket']}/bertlib/staged/image/*"
    repo_arn = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{names['repository']}"
    assert grants["PushImage"]["Resource"] == repo_arn and "ecr:PutImage" in grants["PushImage"]["Action"]
    assert grants["PullBaseImage"]["Resource"] == "arn:aws:ecr:us-east-1:763104351884:repository/tensorflow-training"
    assert not {"ecr:PutImage", "ecr:InitiateLayerUpload"} & set(grants["PullBaseImage"]["Action"])
    assert grants["EcrLogin"]["Action"] == ["ecr:GetAuthorizationToken"]  # the only "*" resource
    assert [s for s in grants.values() if s["Resource"] == "*"] == [grants["EcrLogin"]]
    assert all("/aws/codebuild/" + names["project"] in r for r in grants["BuildLogs"]["Resource"])

    # CodeBuild: a privileged Linux build of the zip, running build_and_push.sh with the tag
    (project,) = session.client("codebuild").batch_get_projects(names=[names["project"]])["projects"]
    env = project["environment"]
    assert env["type"] == "LINUX_CONTAINER" and env["privilegedMode"] is True
    assert env["image"] == "aws/codebuild/standard:7.0" and env["computeType"] == "BUILD_GENERAL1_LARGE"
    assert {v["name"]: v["value"] for v in env["environmentVariables"]}["AWS_REGION"] == "us-east-1"
    assert project["serviceRole"] == role["Arn"]
    assert project["source"]["type"] == "S3" and project["source"]["location"] == f"{aws_env['bucket']}/{key}"
    assert 'bash container/build_and_push.sh "$IMAGE_TAG"' in project["source"]["buildspec"]
    start = sent(info, "codebuild StartBuild")  # moto keeps no overrides: the request as sent
    assert start["sourceLocationOverride"] == f"{aws_env['bucket']}/{key}"
    assert start["environmentVariablesOverride"] == [
        {"name": "IMAGE_TAG", "value": f"tf2.21-{sha[:12]}", "type": "PLAINTEXT"}
    ]

    # a re-run (nothing pushed: moto's build pushes nothing) reads, then only puts the policy and builds
    again = image.build(config(aws_env, names), session=session, out=lambda line: None)
    assert again["status"] == "SUCCEEDED" and again["image_uri"] == info["image_uri"]
    writes = [op for op in operations(again) if not op.split()[1].startswith(("Get", "Head", "Describe", "BatchGet"))]
    assert writes == ["iam PutRolePolicy", "codebuild StartBuild"]
    repos = session.client("ecr").describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in repos].count(names["repository"]) == 1
    assert len(session.client("codebuild").list_builds_for_project(projectName=names["project"])["ids"]) == 2


def test_a_changed_setting_updates_the_project(aws_env, names):
    session = boto3.Session(region_name=aws_env["region"])
    image.build(config(aws_env, names), session=session, out=lambda line: None)
    updates: list = []
    answer(session, "codebuild.UpdateProject", {"project": {}}, updates)  # moto 5.2.5 has no UpdateProject
    info = image.build(
        config(aws_env, names, compute_type="BUILD_GENERAL1_2XLARGE"), session=session, out=lambda line: None
    )
    assert "codebuild CreateProject" not in operations(info) and len(updates) == 1
    assert updates[0]["environment"]["computeType"] == "BUILD_GENERAL1_2XLARGE"
    assert updates[0]["environment"]["privilegedMode"] is True and updates[0]["name"] == names["project"]


def test_given_role_is_used_as_is(aws_env, names):
    role = f"arn:aws:iam::{ACCOUNT}:role/my-codebuild-role"
    session = boto3.Session(region_name=aws_env["region"])
    info = image.build(config(aws_env, names, role_arn=role), session=session, out=lambda line: None)
    assert not [op for op in operations(info) if op.startswith("iam ")]
    (project,) = session.client("codebuild").batch_get_projects(names=[names["project"]])["projects"]
    assert project["serviceRole"] == role


def test_an_image_already_pushed_under_the_default_tag_is_not_built_again(aws_env, names):
    session = boto3.Session(region_name=aws_env["region"])
    first = image.build(config(aws_env, names), session=session, out=lambda line: None)
    tag = first["image_uri"].rsplit(":", 1)[1]
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "layers": []}
    session.client("ecr").put_image(
        repositoryName=names["repository"], imageManifest=json.dumps(manifest), imageTag=tag
    )
    lines: list[str] = []
    info = image.build(config(aws_env, names), session=session, out=lines.append)
    assert info["status"] == "Exists" and "codebuild StartBuild" not in operations(info)
    assert "is already in ECR" in lines[-1]
    forced = image.build(config(aws_env, names, force=True), session=session, out=lambda line: None)
    assert forced["status"] == "SUCCEEDED"


#: a failed build as BatchGetBuilds returns it (the ``Build`` shape of the CodeBuild API reference:
#: ``phases[].phaseType/phaseStatus/contexts[].statusCode/message``, ``logs.deepLink``)
FAILED_BUILD = {
    "id": "bertlib-image:5c7bd1f0-8d4e-4f3b-9a35-0c4c2e0f9b11",
    "buildStatus": "FAILED",
    "currentPhase": "COMPLETED",
    "buildComplete": True,
    "phases": [
        {"phaseType": "SUBMITTED", "phaseStatus": "SUCCEEDED", "durationInSeconds": 0},
        {"phaseType": "QUEUED", "phaseStatus": "SUCCEEDED", "durationInSeconds": 1},
        {"phaseType": "PROVISIONING", "phaseStatus": "SUCCEEDED", "durationInSeconds": 31, "contexts": []},
        {"phaseType": "DOWNLOAD_SOURCE", "phaseStatus": "SUCCEEDED", "durationInSeconds": 3, "contexts": []},
        {"phaseType": "INSTALL", "phaseStatus": "SUCCEEDED", "durationInSeconds": 0, "contexts": []},
        {"phaseType": "PRE_BUILD", "phaseStatus": "SUCCEEDED", "durationInSeconds": 0, "contexts": []},
        {
            "phaseType": "BUILD",
            "phaseStatus": "FAILED",
            "durationInSeconds": 412,
            "contexts": [
                {
                    "statusCode": "COMMAND_EXECUTION_ERROR",
                    "message": 'Error while executing command: bash container/build_and_push.sh "$IMAGE_TAG".\n'
                    "Reason: exit status 1",
                }
            ],
        },
        {"phaseType": "POST_BUILD", "phaseStatus": "SUCCEEDED", "durationInSeconds": 0, "contexts": []},
        {"phaseType": "FINALIZING", "phaseStatus": "SUCCEEDED", "durationInSeconds": 2, "contexts": []},
        {"phaseType": "COMPLETED"},
    ],
    "logs": {
        "groupName": "/aws/codebuild/bertlib-image",
        "streamName": "5c7bd1f0-8d4e-4f3b-9a35-0c4c2e0f9b11",
        "deepLink": "https://console.aws.amazon.com/cloudwatch/home?region=us-east-1#logsV2:log-groups/log-group/"
        "$252Faws$252Fcodebuild$252Fbertlib-image/log-events/5c7bd1f0-8d4e-4f3b-9a35-0c4c2e0f9b11",
    },
}


def test_a_failed_build_is_one_line(aws_env, names, monkeypatch, capsys):
    session = boto3.Session(region_name=aws_env["region"])
    answer(session, "codebuild.BatchGetBuilds", {"builds": [FAILED_BUILD]})
    with pytest.raises(image.BuildFailed) as err:
        image.build(config(aws_env, names), session=session, out=lambda line: None)
    line = str(err.value)
    assert line == (
        f"image build {FAILED_BUILD['id']} FAILED in phase BUILD: COMMAND_EXECUTION_ERROR: Error while executing "
        'command: bash container/build_and_push.sh "$IMAGE_TAG". Reason: exit status 1 '
        f"(logs: {FAILED_BUILD['logs']['deepLink']})"
    )
    # the command: that line on stderr, exit 1
    monkeypatch.setattr(image, "boto_session", lambda region: session)
    args = ["image", "--region", "us-east-1", "--s3_prefix", f"s3://{aws_env['bucket']}/bertlib", "--poll_seconds", "0"]
    args += [a for k, v in names.items() for a in (f"--{k}", v)]
    assert launch_cli.main(args) == 1
    assert capsys.readouterr().err == f"error: {line}\n"


def test_an_aws_error_is_one_line(aws_env, names):
    session = boto3.Session(region_name=aws_env["region"])
    with pytest.raises(image.BuildFailed) as err:  # the bucket does not exist
        image.build(
            config(aws_env, names, s3_prefix="s3://no-such-bucket-here/x"), session=session, out=lambda line: None
        )
    assert str(err.value).startswith("image build: s3 PutObject: NoSuchBucket: ") and "\n" not in str(err.value)


def test_dry_run_without_credentials_prints_every_request(repo_root, subprocess_env, tmp_path):
    env = {k: v for k, v in subprocess_env.items() if not k.startswith(("AWS_", "BERTLIB_"))}
    env.update(
        HOME=str(tmp_path),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    cmd = [sys.executable, "-m", "bertlib.cli", "launch", "image", "--region", "af-south-1", "--dry-run"]
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("dry run: nothing was sent to AWS"))
    assert "(BERTLIB_S3_PREFIX, account shown as placeholders)" in lines[head]
    requests = [line.split(" {", 1)[0].split(". ", 1)[1] for line in lines[head + 1 : -1]]
    assert requests == [
        "sts GetCallerIdentity",
        "s3 HeadObject",
        "s3 PutObject",
        "ecr DescribeRepositories",
        "ecr CreateRepository",
        "iam GetRole",
        "iam CreateRole",
        "iam PutRolePolicy",
        "codebuild BatchGetProjects",
        "codebuild CreateProject",
        "codebuild StartBuild",
    ]
    put_policy = next(line for line in lines if "PutRolePolicy" in line)
    policy = json.loads("{" + put_policy.split(" {", 1)[1])["PolicyDocument"]
    pull = next(s for s in policy["Statement"] if s["Sid"] == "PullBaseImage")
    assert pull["Resource"] == "arn:aws:ecr:af-south-1:626614931356:repository/tensorflow-training"  # dlc_registry.sh
    assert lines[-1].startswith(
        "export BERTLIB_IMAGE_URI=000000000000.dkr.ecr.af-south-1.amazonaws.com/bertlib-training:tf2.21-"
    )


def test_no_s3_prefix_is_one_line_before_any_request(monkeypatch):
    monkeypatch.delenv("BERTLIB_S3_PREFIX", raising=False)
    with pytest.raises(ConfigError, match=r"set --s3_prefix or \$BERTLIB_S3_PREFIX"):
        image.build(image.ImageBuildConfig(region="us-east-1"), out=lambda line: None)


def test_the_notebook_builds_only_when_no_image_is_set(aws_env, names, monkeypatch, capsys):
    """02_phase1's image cell: nothing for a local run or a set image; else the build, whose URI the launch
    then reads from $BERTLIB_IMAGE_URI."""

    def params(**launch):
        return SimpleNamespace(configs={"phase1": SimpleNamespace(launch=LaunchConfig(**launch))})

    assert notebook.training_image(params(backend="local")) is None
    given = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/mine:1"
    assert notebook.training_image(params(backend="sagemaker", image_uri=given)) == given
    monkeypatch.setenv("BERTLIB_IMAGE_URI", given)
    assert notebook.training_image(params(backend="sagemaker")) == given
    assert "nothing to build" in capsys.readouterr().out
    monkeypatch.delenv("BERTLIB_IMAGE_URI")
    monkeypatch.setenv("BERTLIB_S3_PREFIX", f"s3://{aws_env['bucket']}/bertlib")
    real = image.ImageBuildConfig
    monkeypatch.setattr(image, "ImageBuildConfig", lambda **kw: real(**kw, poll_seconds=0, **names))
    built = notebook.training_image(params(backend="sagemaker"))
    assert built.startswith(f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{names['repository']}:tf2.21-")
    assert os.environ["BERTLIB_IMAGE_URI"] == built and capsys.readouterr().out.endswith(
        f"pushed {built}\ntraining image: {built} (now $BERTLIB_IMAGE_URI)\n"
    )


def test_the_zip_is_deterministic_and_rebuilds_its_own_context(tmp_path):
    """The same files give the same zip; unpacked (as CodeBuild does), its context.sh assembles the same
    context, which is what build_and_push.sh does there."""
    first, second = image.build_context(), image.build_context()
    assert first.data == second.data and first.sha256 == second.sha256
    unpacked = tmp_path / "src"
    zipfile.ZipFile(io.BytesIO(first.data)).extractall(unpacked)
    (unpacked / "container" / "context.sh").chmod(0o755)
    assert context_files(tmp_path, unpacked / "container" / "context.sh") == set(first.files)
