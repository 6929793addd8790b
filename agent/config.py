"""`agent.toml`: the model, limits, prices, tools and policy, validated at load.

Looked for at `--config PATH`, else `./agent.toml`, else `$AGENT_HOME/agent.toml`; none is fine
(every setting has a default or a flag). A wrong file is refused with the key that is wrong::

    [model]
    uri = "openai:gpt-5.5"          # see `agent run --help` for the URI forms
    planner = "openai:gpt-5.5"      # optional: plan with another model than the one that acts
    api_key_env = "LOCAL_MODEL_KEY" # for an openai-compatible server: the variable its key is
                                    # read from (never this file; openai: reads $OPENAI_API_KEY)
    timeout = 120                   # seconds per model call
    max_attempts = 5                # tries per model call on 429, 5xx, timeouts
    context_window = 128000         # tokens, for an HTTP model (a local model's file says)
    vision = true                   # the model sees pictures (screenshots): sent as images.
                                    # Default: true for openai: and anthropic:, else false
    plan = true                     # false: no planner call, each task is one step

    [model.local]                   # for local:PATH.gguf models (llama.cpp in a model worker)
    n_ctx = 8192                    # context to give it (default: its own, at most 8192)
    threads = 8                     # CPU threads (default: llama.cpp's: half to generate, all
                                # to read prompts)
    max_tokens = 1024               # per answer
    temperature = 0.0               # 0 decodes greedily, best for tool calls
    repeat_penalty = 1.1
    seed = 0
    slots = 2                       # KV-cache slots: a planner and an executor keep their own
    repack = false                  # llama.cpp's weight repacking; unset: off on AMX CPUs only
    mmproj = "mmproj-model.gguf"    # a vision model's projector: the model then sees pictures
    idle_seconds = 300              # the model worker exits after this long with no client

    [limits]                        # per task; flags on `agent run` override
    max_steps = 50
    max_tokens = 500000
    max_seconds = 1800
    max_cost_usd = 2.0

    [prices."openai:gpt-5.5"]       # US dollars per million tokens; the cost budget uses it
    input = 1.25
    output = 10.0

    [tools]
    modules = ["examples/tally_tool.py"]  # modules or .py files whose @tool functions register

    [[tools.openapi]]               # every operation of an OpenAPI 3 spec is a tool
    spec = "petstore.yaml"          # a file (relative to this one) or an http(s) URL
    server = "https://api.example.com/v1"  # default: the spec's first server
    secret = "PETSTORE_KEY"         # the secret its security scheme takes (`agent secrets`)
    prefix = "pets_"                # put before each of its tools' names (default: none)

    [[tools.mcp]]                   # an MCP server's tools (see tools/mcp.py)
    name = "notes"                  # put before its tools' names
    command = ["python3", "server.py"]  # over stdio, in a sandbox of its own; or over
                                    # streamable HTTP: url = "http://127.0.0.1:8720/mcp"
    folder = "mcp"                  # where the command runs (relative to this file); in the
                                    # sandbox, mounted read-only at /srv/mcp
    packages = []                   # what the sandbox's image adds to the mcp SDK
    trusted = false                 # true: run it on this host as your own program

    [policy]
    file = "policies.toml"          # rules for the gate; default: the packaged default policy

    [sandbox]                       # the tasks' containers: see sandbox/limits.py
    image = "agent-sandbox:latest"
    pool_size = 2
    [sandbox.limits]
    memory_mb = 1024
    [sandbox.max]
    memory_mb = 4096

    [deploy]                        # where the deploy tools run services
    enabled = false                 # true: every new task may deploy (as `agent run --deploy`)
    engine = ""                     # a Docker engine's URL (tcp://, ssh://); "" for $DOCKER_HOST,
                                    # else the local one
    publish = "127.0.0.1"           # the host address a deployment's port is published on

    [approvals]
    expire_after = 259200           # seconds a request waits for a reviewer before it is
                                    # denied (the model is told); default 3 days;
                                    # 0: requests never expire
    escalate_to = ["dana"]          # instead of denied, an expired request is escalated to
                                    # these reviewers; only they may decide it then
    escalate_after = 86400          # how long it then waits before it is denied (default:
                                    # expire_after; 0: for ever)
    webhook = "https://hooks.example.com/agent"  # `agent worker` posts each request and
                                    # decision there, signed (see agent/webhooks.py)
    webhook_key_env = "AGENT_WEBHOOK_KEY"  # the variable holding the signing key

    [session]                       # the interactive session (`agent` with no command)
    review_plan = true              # show each plan before it runs (`/plan review` too)
    history = "/home/me/.agent-history"  # what was typed (default: $AGENT_HOME/history)

    [secrets]                       # named secrets tools fill in for {{secret:NAME}}
    file = "secrets.toml"           # default: $AGENT_HOME/secrets.toml (`agent secrets`)

    [engine]                        # what runs tasks (see "Scaling out" in README.md)
    kind = "embedded"               # this process, SQLite (default); "temporal": workflows on
                                    # a Temporal service, run by `agent worker --engine temporal`
    address = "127.0.0.1:7233"      # the Temporal frontend (`agent engine dev` starts one here)
    namespace = "default"
    task_queue = "agent-tasks"
    heartbeat_seconds = 10          # a worker that dies mid-call is noticed within this
    history_events = 5000           # a task's workflow continues as new past this many events
    host = ""                       # this worker's host (default: the machine's name); a task's
                                    # sandbox stays on one host, and its calls go there
    host_wait_seconds = 60          # then a host that no worker answers for is given up: the
                                    # sandbox is made again elsewhere from its last snapshot
    [engine.tls]                    # for a service that wants TLS (mutual, with cert and key)
    ca = "ca.pem"
    cert = "client.pem"
    key = "client.key"
    server_name = "temporal.example.internal"

    [artifacts]                     # where tasks keep files beside their logs (default: a folder
                                    # beside the store); a bucket every worker reaches:
    bucket = "agent-artifacts"      # an S3-compatible bucket (needs agent-runtime[s3]);
    prefix = "prod"                 # credentials are the AWS SDK's (AWS_ACCESS_KEY_ID...)
    endpoint_url = "https://minio.internal:9000"   # for a store that is not AWS's
    region = "eu-west-1"
"""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.backends import normalize_uri
from agent.backends._worker_proto import DEFAULT_IDLE_SECONDS
from agent.events import Escalation, Limits
from agent.home import default_home
from base.errors import ConfigError
from sandbox.limits import SandboxConfig
from tools.mcp import MCPSource
from tools.openapi import OpenAPISource


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocalModelConfig(_Section):
    n_ctx: int | None = Field(None, ge=256)
    threads: int | None = Field(None, ge=1)
    max_tokens: int = Field(1024, ge=16)
    temperature: float = Field(0.0, ge=0, le=2)
    repeat_penalty: float = Field(1.1, ge=1, le=2)
    seed: int = 0
    slots: int = Field(2, ge=1, le=16)
    repack: bool | None = None
    mmproj: Path | None = None
    idle_seconds: float = Field(DEFAULT_IDLE_SECONDS, gt=0)


class ModelConfig(_Section):
    uri: str | None = None
    planner: str | None = None
    api_key_env: str | None = None
    timeout: float = Field(120.0, gt=0)
    max_attempts: int = Field(5, ge=1, le=20)
    context_window: int | None = Field(None, ge=512)
    vision: bool | None = None
    plan: bool = True
    local: LocalModelConfig = Field(default_factory=LocalModelConfig)


class PriceConfig(_Section):
    input: float = Field(ge=0)
    output: float = Field(ge=0)


class ToolsConfig(_Section):
    modules: list[str] = Field(default_factory=list)
    #: OpenAPI specs whose operations are tools (see tools/openapi.py)
    openapi: list[OpenAPISource] = Field(default_factory=list)
    #: MCP servers whose tools are tools (see tools/mcp.py)
    mcp: list[MCPSource] = Field(default_factory=list)
    #: tools taken out by name (built-ins included)
    disable: list[str] = Field(default_factory=list)


class DeployConfig(_Section):
    enabled: bool = False
    engine: str = ""
    publish: str = "127.0.0.1"


class PolicyConfig(_Section):
    file: Path | None = None


class SecretsConfig(_Section):
    #: the secrets file (default: $AGENT_HOME/secrets.toml); see tools/secrets.py
    file: Path | None = None

    def path(self) -> Path:
        return self.file or default_home() / "secrets.toml"


class DocumentsConfig(_Section):
    #: what a new documents index embeds with: "local" (the bundled offline model),
    #: "openai:MODEL" or "openai-compatible:URL#MODEL" (an embeddings API); "": the one the
    #: index was made with, else "local"
    embedder: str = Field("", pattern=r"^(|local|openai:\S+|openai-compatible:https?://\S+#\S+)$")
    #: what transcribes speech given with a task: "local" (Whisper base, the audio extra),
    #: "openai:MODEL" or "openai-compatible:URL#MODEL" (a transcription API)
    transcriber: str = Field(
        "local", pattern=r"^(local|openai:\S+|openai-compatible:https?://\S+#\S+)$"
    )


class ArtifactsConfig(_Section):
    #: an S3-compatible bucket to keep tasks' artifacts in ("": a folder beside the store)
    bucket: str = Field("", pattern=r"^[a-z0-9.-]{3,63}$|^$")
    #: where in the bucket (objects are PREFIX/TASK/NAME)
    prefix: str = ""
    #: the store's endpoint, for one that is not AWS's (MinIO, Ceph, R2...)
    endpoint_url: str = Field("", pattern=r"^(https?://\S+)?$")
    region: str = ""


class ApprovalsConfig(_Section):
    #: seconds a request for approval waits for a reviewer before it is denied; 0: for ever
    expire_after: float = Field(3 * 24 * 3600.0, ge=0)
    #: reviewers (their names, as `agent reviewers add` or the OS account gives them) a request
    #: is escalated to when it expires, instead of being denied: only they may decide it then
    escalate_to: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]] = Field(
        default_factory=list
    )
    #: seconds an escalated request then waits before it is denied (left out: expire_after; 0:
    #: for ever)
    escalate_after: float | None = Field(None, ge=0)

    def escalation(self) -> Escalation | None:
        """What becomes of a request no reviewer decided in time, when not a denial."""
        if not self.escalate_to:
            return None
        after = self.expire_after if self.escalate_after is None else self.escalate_after
        return Escalation(tuple(self.escalate_to), after or None)

    #: where `agent worker` posts a notice of each request and decision (see agent/webhooks.py)
    webhook: str | None = Field(None, pattern=r"^https?://")
    #: the variable holding the key the notices are signed with
    webhook_key_env: str = "AGENT_WEBHOOK_KEY"


class SessionConfig(_Section):
    #: each plan (and replan) waits for the user to accept, edit or replace it
    review_plan: bool = False
    #: where the interactive session keeps what was typed ($AGENT_HOME/history when unset)
    history: Path | None = None


class EngineTLS(_Section):
    #: the CA that signed the service's certificate (default: the system's)
    ca: Path | None = None
    #: a client certificate and its key, for mutual TLS
    cert: Path | None = None
    key: Path | None = None
    #: the name the service's certificate is checked against (default: the address's host)
    server_name: str | None = None


class EngineConfig(_Section):
    kind: Literal["embedded", "temporal"] = "embedded"
    address: str = Field("127.0.0.1:7233", pattern=r"^[^\s:/]+:[0-9]{1,5}$")
    namespace: str = Field("default", min_length=1)
    task_queue: str = Field("agent-tasks", min_length=1)
    heartbeat_seconds: float = Field(10.0, ge=1, le=600)
    #: a workflow's history is kept under this many events by continuing it as new (Temporal
    #: warns at 10,240 and fails at 51,200)
    history_events: int = Field(5000, ge=200, le=40000)
    tls: EngineTLS | None = None
    #: the name of this worker's host: a task's sandbox lives on one host, and its calls go to
    #: that host's workers (default: the machine's host name)
    host: str = Field("", pattern=r"^[A-Za-z0-9_.-]*$", max_length=100)
    #: how long a call waits for a worker on its sandbox's host before the sandbox is made
    #: again on another host, from the last snapshot of its workspace
    host_wait_seconds: float = Field(60.0, ge=1, le=86400)

    def host_name(self) -> str:
        """The host this process's sandboxes are on, as task queues name it."""
        return self.host or socket.gethostname()


class Config(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    limits: Limits = Field(default_factory=Limits)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig)
    session: SessionConfig = Field(default_factory=SessionConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    artifacts: ArtifactsConfig = Field(default_factory=ArtifactsConfig)
    documents: DocumentsConfig = Field(default_factory=DocumentsConfig)
    #: the file it came from, if any (paths inside it are relative to its folder)
    source: Path | None = None


def find_config(explicit: Path | None = None) -> Path | None:
    if explicit is not None:
        return explicit
    for candidate in (Path("agent.toml"), default_home() / "agent.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | None) -> Config:
    """Read and validate a config file (None: all defaults). Raises `ConfigError`."""
    if path is None:
        return Config()
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"{path}: {problems}") from None
    config.source = path.resolve()
    base = path.resolve().parent
    if config.policy.file is not None and not config.policy.file.is_absolute():
        config.policy.file = base / config.policy.file
    if config.secrets.file is not None and not config.secrets.file.is_absolute():
        config.secrets.file = base / config.secrets.file
    if (projector := config.model.local.mmproj) is not None:
        config.model.local.mmproj = base / projector.expanduser()  # an absolute one stays
    # A scripted or local model's file, a tool given as a file, and the policy file are all
    # relative to the config that names them; so are price keys that name such a model.
    for section in ("uri", "planner"):
        uri = getattr(config.model, section)
        if uri:
            setattr(config.model, section, normalize_uri(uri, base))
    config.prices = {normalize_uri(k, base): v for k, v in config.prices.items()}
    for source in config.tools.openapi:
        if (
            not source.spec.startswith(("http://", "https://"))
            and not Path(source.spec).is_absolute()
        ):
            source.spec = str(base / source.spec)
    for server in config.tools.mcp:
        if server.folder is not None:
            server.folder = str(base / server.folder)
    if (tls := config.engine.tls) is not None:
        for name in ("ca", "cert", "key"):
            given = getattr(tls, name)
            if given is not None and not given.is_absolute():
                setattr(tls, name, base / given)
    config.tools.modules = [
        str(base / m) if m.endswith(".py") and not Path(m).is_absolute() else m
        for m in config.tools.modules
    ]
    return config
