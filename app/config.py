"""Every setting, read from the environment in one place. The README's configuration table lists each one
(a test checks it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

LLM_TOOLS_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Settings:
    db_url: str = field(default="sqlite:///data/quanda.db", metadata={"env": "QUANDA_DB_URL",
                        "doc": "Store: sqlite:///path (embedded default), postgresql://user@host:port/db or "
                                "mongodb://host:port/db"})
    mongo_driver: str = field(default="pymongo", metadata={"env": "QUANDA_MONGO_DRIVER",
                              "doc": "MongoDB client: motor or pymongo (PyMongo's AsyncMongoClient)"})
    host: str = field(default="127.0.0.1", metadata={"env": "QUANDA_HOST",
                      "doc": "Address to bind; anything but loopback requires QUANDA_SECRET"})
    port: int = field(default=5001, metadata={"env": "QUANDA_PORT", "doc": "Port to serve on"})
    workers: int = field(default=1, metadata={"env": "QUANDA_WORKERS",
                         "doc": "Server processes on the port (`quanda serve --workers N`): peers through the "
                                "store, one core each; 1 serves in the process itself"})
    secret: str = field(default="", metadata={"env": "QUANDA_SECRET",
                        "doc": "Session-signing key (required when not bound to loopback)"})
    auth: str = field(default="local", metadata={"env": "QUANDA_AUTH",
                      "doc": "local: one workspace for the person at this machine, no login (loopback only); "
                             "accounts: users log in, one workspace each (required beyond loopback)"})
    allowed_hosts: str = field(default="", metadata={"env": "QUANDA_ALLOWED_HOSTS",
                               "doc": "Comma-separated host names the app answers to (always: the bound address, "
                                      "localhost, 127.0.0.1, [::1]); any other Host header gets 400"})
    max_token_bytes: int = field(default=1 << 20, metadata={"env": "QUANDA_MAX_TOKEN_BYTES",
                                 "doc": "Largest token a writer may append (bytes)"})
    max_message_bytes: int = field(default=16 << 20, metadata={"env": "QUANDA_MAX_MESSAGE_BYTES",
                                   "doc": "Largest content a message may reach (bytes)"})
    db_timeout_s: float = field(default=5.0, metadata={"env": "QUANDA_DB_TIMEOUT_S",
                                "doc": "Deadline of every store call (seconds): connecting, waiting for a pooled "
                                       "connection or a disk write, one statement. A call past it fails with a "
                                       "clear error (a write saying whether it may still be applied), /-/health "
                                       "turns 503 and every tab is told"})
    pg_listen_url: str = field(default="", metadata={"env": "QUANDA_PG_LISTEN_URL",
                               "doc": "PostgreSQL: a direct URL of the database server for each process's one "
                                      "listening connection (LISTEN/NOTIFY); required when QUANDA_DB_URL goes "
                                      "through PgBouncer in transaction mode (?pool_mode=transaction)"})
    pg_pool_size: int = field(default=8, metadata={"env": "QUANDA_PG_POOL_SIZE",
                              "doc": "PostgreSQL: pooled connections per server process (each process also keeps "
                                     "one writer and one listening connection: N processes use N × (this + 2) "
                                     "of max_connections)"})

    ollama_host: str = field(default="http://localhost:11434", metadata={"env": "OLLAMA_HOST",
                             "doc": "Ollama server (host[:port] or URL), used unless QUANDA_LLM_URL is set"})
    ollama_model: str = field(default="", metadata={"env": "OLLAMA_MODEL",
                              "doc": "Default Ollama model (unset: the server's only or first model)"})
    llm_url: str = field(default="", metadata={"env": "QUANDA_LLM_URL",
                         "doc": "OpenAI-compatible server base URL including /v1 (llama.cpp, vLLM, LM Studio, OpenAI)"})
    llm_api_key: str = field(default="", metadata={"env": "QUANDA_LLM_API_KEY",
                             "doc": "Bearer key for QUANDA_LLM_URL"})
    llm_model: str = field(default="", metadata={"env": "QUANDA_LLM_MODEL",
                           "doc": "Default model on QUANDA_LLM_URL (unset: the server's only or first model)"})
    llm_stall_s: float = field(default=60.0, metadata={"env": "QUANDA_LLM_STALL_S",
                               "doc": "Seconds without a byte from the LLM before the answer is marked stalled"})
    llm_tools: str = field(default="auto", metadata={"env": "QUANDA_LLM_TOOLS",
                           "doc": "Offer the plugins' commands as native tool calls: auto (when the model takes "
                                  "tools: Ollama's /api/show lists the tools capability, or an OpenAI-compatible "
                                  "server has not refused them), on (always) or off (never: JSON commands in "
                                  "the text only)"})
    llm_parallel: int = field(default=0, metadata={"env": "QUANDA_LLM_PARALLEL",
                              "doc": "How many requests the LLM server serves at once: 0 finds out (llama.cpp's "
                                     "/props, llama-cpp-python's /openapi.json; any other server is taken to serve "
                                     "several until it cuts an answer), 1 one at a time (answers take turns and "
                                     "nothing else is sent to it while one streams), 2 or more several"})
    llm_context: int = field(default=4096, metadata={"env": "QUANDA_LLM_CONTEXT",
                             "doc": "Context window in tokens when the server does not say (Ollama's /api/show "
                                    "and llama.cpp's /props do; a refusal that names the window teaches it); "
                                    "the largest window sent to Ollama as num_ctx. A conversation's own context "
                                    "size overrides it"})
    llm_check_s: float = field(default=15.0, metadata={"env": "QUANDA_LLM_CHECK_S",
                               "doc": "Seconds between checks of the LLM server for the status badge while a tab "
                                      "is open (it is also checked after every answer)"})
    draft_ttl_s: float = field(default=3600.0, metadata={"env": "QUANDA_DRAFT_TTL_S",
                               "doc": "Seconds a chat draft may sit untouched before it is sealed and removed from "
                                      "view (a tab still holding its text starts a new draft as you type)"})
    api_token: str = field(default="", metadata={"env": "QUANDA_API_TOKEN",
                           "doc": "Local mode: the HTTP API also accepts Authorization: Bearer <token> (acting "
                                  "for the local workspace); accounts mode uses per-user tokens instead"})
    system_prompt_file: str = field(default="", metadata={"env": "QUANDA_SYSTEM_PROMPT_FILE",
                                    "doc": "File whose text replaces the base system prompt"})
    job_lease_s: float = field(default=10.0, metadata={"env": "QUANDA_JOB_LEASE_S",
                               "doc": "Seconds a running answer or simulator run is held without a heartbeat "
                                      "before another server marks it interrupted"})
    retention_s: float = field(default=7 * 86400.0, metadata={"env": "QUANDA_RETENTION_S",
                               "doc": "Seconds a finished command's claim (of an answer that is final) and other "
                                      "bookkeeping records are kept before they are deleted (hourly, by one server)"})
    ws_frames_per_s: float = field(default=20.0, metadata={"env": "QUANDA_WS_FRAMES_PER_S",
                                   "doc": "WebSocket messages one tab may send per second (bursts of twice as many); "
                                          "more wait their turn, and a tab kept over the rate for 10 s is closed"})
    ws_owner_frames_per_s: float = field(default=50.0, metadata={"env": "QUANDA_WS_OWNER_FRAMES_PER_S",
                                         "doc": "WebSocket messages one workspace may send per second over all "
                                                "its tabs on one server (bursts of twice as many)"})
    trusted_proxies: str = field(default="", metadata={"env": "QUANDA_TRUSTED_PROXIES",
                                 "doc": "Comma-separated addresses or networks (e.g. 127.0.0.1, 10.0.0.0/8) of reverse "
                                        "proxies whose X-Forwarded-For and X-Forwarded-Proto are believed; empty "
                                        "(default): those headers are ignored from everyone, loopback included"})
    login_workers: int = field(default=0, metadata={"env": "QUANDA_LOGIN_WORKERS",
                               "doc": "Threads that check passwords (scrypt, ~60 ms each) beside the event loop; 0 "
                                      "(default): one fewer than the CPUs, at least 1 and at most 4"})
    login_queue: int = field(default=100, metadata={"env": "QUANDA_LOGIN_QUEUE",
                             "doc": "Password checks that may wait for a worker; one more is answered 429 at once "
                                    "(a sign-in from an address with fewer failures takes the place of one with more)"})
    ws_max_per_owner: int = field(default=100, metadata={"env": "QUANDA_WS_MAX_PER_OWNER",
                                  "doc": "WebSocket connections (tabs) one workspace may have open on one server; "
                                         "one more is refused (close code 1013: the tab retries later)"})
    ws_max_per_address: int = field(default=200, metadata={"env": "QUANDA_WS_MAX_PER_ADDRESS",
                                    "doc": "WebSocket connections one client address may have open on one server"})
    ws_handshakes_per_s: float = field(default=20.0, metadata={"env": "QUANDA_WS_HANDSHAKES_PER_S",
                                       "doc": "WebSocket handshakes one client address may make per second (bursts "
                                              "of three times as many); one more is answered 429"})
    ws_deflate: int = field(default=0, metadata={"env": "QUANDA_WS_DEFLATE",
                            "doc": "1: compress WebSocket frames (permessage-deflate) for clients that offer it; "
                                   "0 (default): send them as they are, saving the CPU of compressing every "
                                   "frame for every tab (the fragments are small; useful only on a slow link)"})
    agui_stop_grace_s: float = field(default=2.0, metadata={"env": "QUANDA_AGUI_STOP_GRACE_S",
                                     "doc": "Seconds after an AG-UI client goes away (abortRun, a closed tab) before "
                                            "its answer is stopped, unless a client resumes the run with "
                                            "Last-Event-ID first (0: at once)"})
    metrics_token: str = field(default="", metadata={"env": "QUANDA_METRICS_TOKEN",
                               "doc": "GET /-/metrics also answers Authorization: Bearer <token> from any address "
                                      "(unset: loopback clients only)"})
    metrics_public: int = field(default=0, metadata={"env": "QUANDA_METRICS_PUBLIC",
                                "doc": "1: GET /-/metrics answers anyone who can reach the server (e.g. behind "
                                       "a firewall that only lets the scraper in)"})
    log_format: str = field(default="human", metadata={"env": "QUANDA_LOG_FORMAT",
                            "doc": "human: one readable line per log record; json: one JSON object per line "
                                   "with the request, answer and job ids (app/logs.py)"})

    def __post_init__(self) -> None:
        if not self.db_timeout_s > 0:
            raise ValueError(f"QUANDA_DB_TIMEOUT_S must be a positive number of seconds, not {self.db_timeout_s!r}")
        if self.pg_pool_size < 1:
            raise ValueError(f"QUANDA_PG_POOL_SIZE must be at least 1, not {self.pg_pool_size!r}")
        if self.llm_tools not in LLM_TOOLS_MODES:
            raise ValueError(f"QUANDA_LLM_TOOLS must be one of {', '.join(LLM_TOOLS_MODES)}, not {self.llm_tools!r}")

    def store_options(self) -> dict[str, object]:
        """What `open_store` takes from the settings (besides the URL)."""
        return {"mongo_driver": self.mongo_driver, "max_token_bytes": self.max_token_bytes,
                "max_message_bytes": self.max_message_bytes, "timeout_s": self.db_timeout_s,
                "pool_size": self.pg_pool_size, "listen_url": self.pg_listen_url}

    @property
    def accounts(self) -> bool:
        return self.auth == "accounts"

    @property
    def host_names(self) -> set[str]:
        """The Host names (without port) the app answers to."""
        names = {"localhost", "127.0.0.1", "[::1]", self.host if ":" not in self.host else f"[{self.host}]"}
        return names | {h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()}

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    @property
    def default_model(self) -> str:
        return self.llm_model if self.llm_url else self.ollama_model

    @classmethod
    def from_env(cls, **overrides: object) -> "Settings":
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(f.metadata["env"])
            if raw is not None:
                values[f.name] = type(f.default)(raw) if not isinstance(f.default, str) else raw
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def documented(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting."""
        return [(f.metadata["env"], str(f.default), f.metadata["doc"]) for f in fields(cls)]
