"""Every entry point's command line, generated from its pydantic schema with click: ONE source of truth.

:func:`command` turns a schema (``PretrainConfig``, ``DataConfig``, ...) into a click command with one
option ``--name VALUE`` per field, whose ``--help`` line shows the field's type, default, constraints
and description. Values are read as YAML, exactly as in a params file and as SageMaker sends
hyperparameters (``--learning_rate 1e-4``, ``--skip_xla true``, ``--phases '[{...}]'``,
``--source_sha256 '{"a": "b"}'``); ``--key=value`` and ``--run-dir`` (dashes) work too. The schema
validates them (the entry point merges them over ``--config FILE``), so a bad value gets the same
one-line message as in the file. Usage errors (an unknown ``--key``, a missing value) raise
:class:`~bertlib.core.errors.ConfigError` (one line; :func:`bertlib.core.errors.run_guarded` exits 2).

A leaf module (click, pydantic, PyYAML and :mod:`bertlib.core.errors` only): every entry point imports it,
never the console script :mod:`bertlib.cli`, and ``--help`` never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
from typing import Any, Literal, Union, get_args, get_origin

import click
import yaml
from click.core import ParameterSource
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from bertlib.core.errors import ConfigError

#: ``--run-dir`` = ``--run_dir``; unknown ``--keys`` are reported by :func:`parse` (one line, naming the file)
CONTEXT_SETTINGS = {
    "help_option_names": ["-h", "--help"],
    "token_normalize_func": lambda s: s.replace("-", "_"),
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "max_content_width": 110,
}


# ----------------------------------------------------------------------------------------------- values

_EXP_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def yaml_value(value: str) -> Any:
    """A command-line value as YAML would read it, plus ``5e-5`` as a float (YAML 1.1 needs ``5.0e-5``);
    ``''`` is null."""
    if value == "":
        return None
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if isinstance(parsed, str) and _EXP_FLOAT.match(value):
        return float(value)
    return parsed


class YamlValue(click.ParamType):
    """A value parsed as YAML; ``metavar`` names the schema type in ``--help``."""

    name = "yaml"

    def __init__(self, metavar: str = "VALUE"):
        self.metavar = metavar

    def get_metavar(self, param, ctx=None):
        return self.metavar

    def convert(self, value, param, ctx):
        return yaml_value(value) if isinstance(value, str) else value


def type_name(annotation: Any) -> str:
    """``int`` → ``INT``, ``Literal["a", "b"]`` → ``[a|b]``, ``list[str]`` → ``LIST``, ``X | None`` → X's."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "[" + "|".join(str(a) for a in args) + "]"
    if origin in (Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return names[0] if len(names) == 1 else "|".join(names)
    if origin in (list, tuple, set, frozenset):
        return "LIST"
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, (dict, BaseModel))):
        return "MAPPING"
    return {int: "INT", float: "FLOAT", str: "TEXT", bool: "BOOL"}.get(annotation, "VALUE")


def default_text(field: FieldInfo) -> str | None:
    """The default as it would be written on the command line (YAML/JSON), None if required."""
    if field.is_required():
        return None
    value = to_jsonable_python(field.get_default(call_default_factory=True))
    if isinstance(value, str):
        return value if value else "''"
    return json.dumps(value)


_BOUNDS = (
    ("ge", ">="),
    ("gt", ">"),
    ("le", "<="),
    ("lt", "<"),
    ("min_length", "min length"),
    ("max_length", "max length"),
    ("pattern", "pattern"),
)


def constraints(field: FieldInfo) -> list[str]:
    """``ge=1`` → ``">= 1"`` ... from the field's metadata."""
    out = []
    for m in field.metadata:
        for attr, word in _BOUNDS:
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{word} {v}")
    return out


def help_text(field: FieldInfo) -> str:
    """``description  [default: X; >= 1]`` (``[required]`` when the schema has no default)."""
    default = default_text(field)
    extra = (["required"] if default is None else [f"default: {default}"]) + constraints(field)
    return f"{field.description or ''}  [{'; '.join(extra)}]".strip()


# ----------------------------------------------------------------------------------------------- commands


def _cli_extra(field: FieldInfo) -> dict:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return extra.get("cli", {})


def schema_params(model: type[BaseModel]) -> list[click.Parameter]:
    """One click parameter per field of ``model``: ``--name VALUE`` (default: not given, so the config
    file's or the schema's value stands), or a positional argument for ``json_schema_extra={"cli":
    {"argument": True}}``, a bare flag for ``{"cli": {"flag": True}}``; ``{"cli": {"aliases": ["-n"]}}`` adds
    short names."""
    params: list[click.Parameter] = []
    for name, field in model.model_fields.items():
        cli = _cli_extra(field)
        kind = YamlValue(type_name(field.annotation))
        if cli.get("flag"):  # a bool given as a bare --name (true); absent = the schema's default
            params.append(
                click.Option(
                    [name, f"--{name}", *cli.get("aliases", [])],
                    is_flag=True,
                    flag_value=True,
                    default=False,
                    help=help_text(field),
                )
            )
        elif cli.get("argument"):
            params.append(click.Argument([name], type=kind, required=field.is_required(), metavar=name.upper()))
        else:
            params.append(
                click.Option(
                    [name, f"--{name}", *cli.get("aliases", [])], type=kind, default=None, help=help_text(field)
                )
            )
    return params


def _owner(model: type[BaseModel], name: str) -> type:
    """The most derived class of ``model``'s MRO that declares field ``name``."""
    for cls in model.__mro__:
        if isinstance(cls, type) and issubclass(cls, BaseModel) and name in inspect.get_annotations(cls):
            return cls
    return model


def _first_line(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.splitlines()[0].replace("``", "") if doc else ""


@dataclasses.dataclass
class Args:
    """A parsed command line: ``values`` holds the schema keys given (YAML-parsed), ``extras`` the
    command's other parameters (``--no_progress`` ...), ``command`` the (sub)command's name."""

    command: str
    config: str | None = None
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    given: set[str] = dataclasses.field(default_factory=set)

    @property
    def source(self) -> str:
        """Where the values come from, as the config errors name it."""
        if self.config:
            return f"{self.config} (with overrides)" if self.values else str(self.config)
        return "command line"


class SchemaCommand(click.Command):
    """A click command whose options are a schema's fields; ``--help`` lists them by the class that
    declares them (the job's own keys first, then the shared ones), each with type, default, description."""

    def __init__(
        self,
        name: str,
        model: type[BaseModel] | None,
        *,
        help: str | None = None,
        params: list[click.Parameter] | None = None,
        config: str | None = None,
        **kwargs,
    ):
        self.model = model
        own = list(params or [])
        if config:
            own.insert(0, click.Option(["--config"], metavar="FILE", default=None, help=config))
        self.has_config = bool(config)
        self.own_names = {p.name for p in own}
        super().__init__(
            name,
            params=own + (schema_params(model) if model else []),
            help=help.replace("``", "") if help else help,
            context_settings=dict(CONTEXT_SETTINGS),
            callback=self._collect,
            **kwargs,
        )

    def _collect(self, **kwargs) -> Args:
        ctx = click.get_current_context()
        args = Args(command=self.name, config=kwargs.pop("config", None) if self.has_config else None)
        fields = self.model.model_fields if self.model else {}
        for name, value in kwargs.items():
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
                args.given.add(name)
            if name in fields:
                if name in args.given:
                    args.values[name] = value
            else:
                args.extras[name] = value
        if ctx.args:
            first = ctx.args[0]
            see = f"; see `{ctx.command_path} --help`" if self.add_help_option else ""
            if first.startswith("-") and len(first) > 1:
                flag = first.partition("=")[0]
                source = f"{args.config} (with overrides)" if args.config else "command line"
                raise ConfigError(f"{source}: unknown key {flag.lstrip('-').replace('-', '_')!r} ({flag}{see})")
            raise ConfigError(f"command line: expected --key value, got {first!r}" + (f" ({see[2:]})" if see else ""))
        return args

    def format_options(self, ctx, formatter):
        help_option = self.get_help_option(ctx)
        own = [
            p.get_help_record(ctx)
            for p in self.get_params(ctx)
            if isinstance(p, click.Option) and (p.name in self.own_names or p is help_option)
        ]
        if own:
            with formatter.section("Options"):
                formatter.write_dl([r for r in own if r])
        if not self.model:
            return
        fields = self.model.model_fields
        arguments = [
            (f"{name.upper()} {type_name(f.annotation)}", help_text(f))
            for name, f in fields.items()
            if _cli_extra(f).get("argument")
        ]
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        sections: dict[type, list] = {}
        for p in self.get_params(ctx):
            if isinstance(p, click.Option) and p.name in fields:
                sections.setdefault(_owner(self.model, p.name), []).append(p)
        for cls in [c for c in self.model.__mro__ if c in sections]:  # the job's own keys first
            declared = list(inspect.get_annotations(cls))
            doc = _first_line(cls).rstrip(".")
            with formatter.section(f"{cls.__name__.lstrip('_')} keys" + (f" — {doc}" if doc else "")):
                formatter.write_dl(
                    [p.get_help_record(ctx) for p in sorted(sections[cls], key=lambda p: declared.index(p.name))]
                )


def progress_option() -> click.Option:
    """``--no_progress``, the flag of the jobs that draw progress bars (parsed into ``extras["no_progress"]``)."""
    return click.Option(["--no_progress"], is_flag=True, help="no progress bars")


def command(
    name: str,
    model: type[BaseModel] | None,
    help: str | None = None,
    params: list[click.Parameter] | None = None,
    config: str | None = None,
    **kwargs,
) -> SchemaCommand:
    """The command line of ``name`` (e.g. ``"bertlib pretrain"``): ``model``'s fields as options, plus
    ``--config FILE`` when ``config`` (its help text) is given, plus ``params`` (non-schema options)."""
    return SchemaCommand(name, model, help=help, params=params, config=config, **kwargs)


def group(name: str, commands: dict[str, click.Command], help: str | None = None) -> click.Group:
    """Subcommands (``bertlib launch {pretrain,squad,prepare-data}``): :func:`parse` returns the chosen one's
    :class:`Args`."""
    return click.Group(
        name,
        commands=commands,
        help=help,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    )


def parse(cmd: click.Command, argv: list[str]) -> Args | None:
    """Parse ``argv`` with ``cmd``: its :class:`Args`, or None when ``--help`` was printed (exit 0).

    Usage errors raise :class:`ConfigError` with one line."""
    try:
        result = cmd.main(list(argv), prog_name=cmd.name, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError:
        raise ConfigError(f"{cmd.name}: a subcommand is needed (see `{cmd.name} --help`)") from None
    except click.BadOptionUsage as e:
        if "requires an argument" in e.message:
            raise ConfigError(f"command line: {e.option_name} needs a value") from None
        raise ConfigError(f"command line: {e.format_message()}") from None
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx else cmd.name
        raise ConfigError(f"command line: {e.format_message()} (see `{where} --help`)") from None
    except click.ClickException as e:
        raise ConfigError(f"command line: {e.format_message()}") from None
    return result if isinstance(result, Args) else None


def parse_values(argv: list[str], model: type[BaseModel] | None = None) -> dict[str, Any]:
    """``["--total_steps", "10"]`` → ``{"total_steps": 10}`` with ``model``'s generated options (without a
    model: one option per ``--key`` present, for schema-free key/value lists such as SageMaker's
    hyperparameters). ``--config`` is an ordinary key here."""
    if model is None:
        keys = dict.fromkeys(
            a[2:].partition("=")[0].replace("-", "_") for a in argv if a.startswith("--") and a != "--"
        )
        params = [click.Option([k, f"--{k}"], type=YamlValue(), default=None) for k in keys if k.isidentifier()]
        cmd = SchemaCommand("command line", None, params=params, add_help_option=False)
        args = parse(cmd, argv)
        return {k: v for k, v in args.extras.items() if k in args.given} if args else {}
    args = parse(command("command line", model, add_help_option=False), argv)
    return args.values if args else {}
